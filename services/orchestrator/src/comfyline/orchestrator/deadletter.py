"""Work that ran out of deliveries: a dead letter, and the job fails ``max_attempts_exceeded``.

A model's work consumer (``work-<model>``, created by its workers) has ``MaxDeliver`` = the model's
retry limit + 1. When a message reaches it (the worker died on the last delivery, or naked it),
the server publishes a ``MAX_DELIVERIES`` advisory on core NATS. Every orchestrator listens in one
queue group, so one of them reads the work message by its stream sequence, writes a
:class:`~comfyline.contracts.DeadLetter` to ``deadletter.<model>`` (message id
``<job_id>:deadletter``), fails the job, and removes the spent message from ``WORK``.

A worker on a job's last delivery also reports ``failed`` with ``final=True``; whichever arrives
first ends the job, the other is dropped by the state machine. Advisories are core NATS (at most
once): if every orchestrator is down when one is sent, the job's run or queue deadline ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from comfyline.contracts import (
    DeadLetter,
    ErrorCode,
    EventKind,
    JobError,
    JobRecord,
    RunJob,
    utcnow,
)
from comfyline.runtime import Bus, job_id_var

from .journal import Journal
from .records import JobStore
from .transitions import Verdict, end

log = logging.getLogger(__name__)


class RecordNotWritten(Exception):
    """The dead-lettered job has no record yet."""


class DeadLetters:
    """Turns MAX_DELIVERIES advisories of ``WORK`` into dead letters and failed jobs."""

    def __init__(self, bus: Bus, store: JobStore, journal: Journal, tries: int = 5) -> None:
        self.bus = bus
        self.names = bus.names
        self.store = store
        self.journal = journal
        self.tries = tries
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen for the advisories (one orchestrator of the group gets each)."""
        self._sub = await self.bus.nc.subscribe(
            self.names.all_max_deliveries_advisories(),
            queue=self.names.queue_group("orchestrator"),
            cb=self._on_message,
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop listening; let advisories being handled finish within ``grace_s``."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)

    async def _on_message(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle_with_retries(msg.data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle_with_retries(self, data: bytes) -> None:
        try:
            advisory: dict[str, Any] = json.loads(data)
        except ValueError:
            log.warning("unreadable advisory")
            return
        pause = 0.2
        for attempt in range(1, self.tries + 1):
            try:
                await self.handle(advisory)
                return
            except RecordNotWritten:
                log.info("dead letter before its job's record", extra={"try": attempt})
            except Exception:
                log.exception("handling a max-deliveries advisory failed", extra={"try": attempt})
            await asyncio.sleep(pause)
            pause *= 2

    async def handle(self, advisory: dict[str, Any]) -> None:
        """Dead-letter the work message the advisory names and fail its job."""
        stream = self.names.stream("WORK")
        seq = int(advisory.get("stream_seq", 0))
        deliveries = int(advisory.get("deliveries", 0))
        if advisory.get("stream") != stream or seq <= 0:
            return
        try:
            raw = await self.bus.js.get_msg(stream, seq=seq)
        except NotFoundError:
            log.info("spent work message already gone", extra={"stream_seq": seq})
            return
        if not raw.data:
            return
        work = RunJob.from_bytes(raw.data)
        job_id_var.set(work.job_id)
        letter = DeadLetter(
            job_id=work.job_id,
            model=work.model,
            deliveries=deliveries,
            stream_seq=seq,
            reason=f"{deliveries} deliveries to {advisory.get('consumer')} without success",
        )
        await self.bus.publish(
            self.names.dead_letter(work.model), letter, msg_id=f"{work.job_id}:deadletter"
        )
        now = utcnow()

        def step(record: JobRecord) -> JobRecord | Verdict:
            last = record.attempt_log[-1].outcome if record.attempt_log else None
            error = JobError(
                code=ErrorCode.MAX_ATTEMPTS_EXCEEDED,
                message=f"gave up after {deliveries} attempts",
                details={"deliveries": deliveries, "last_outcome": last},
            )
            attempts = max(record.attempts, deliveries)
            return end(record, EventKind.FAILED, error, now, attempts=attempts)

        change = await self.store.change(work.job_id, step)
        if change.outcome == "missing":
            # Work sent with its submission (by the gateway, or with the record's creation) can
            # run out of deliveries before the record is written: tried again shortly.
            raise RecordNotWritten(work.job_id)
        if change.effective:
            await self.journal.conclude(change.require(), replay=change.replay)
            log.info("job failed: deliveries exhausted", extra={"deliveries": deliveries})
        with contextlib.suppress(Exception):
            await self.bus.js.delete_msg(stream, seq)
