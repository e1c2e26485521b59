"""Cost and usage: GPU seconds times the model's rate, totalled per owner, model and day.

A job's cost is written on its record as its attempts finish (:func:`job_cost`). Usage totals live
in the ``usage`` bucket under ``<owner>.<model>.<YYYY-MM-DD>`` (the gateway serves them at
``GET /v1/usage``) and are fed from the canonical log, not from the code paths that end jobs: the
durable consumer ``orchestrator-usage`` reads every terminal event on ``JOBS`` (one per job, see
:mod:`.journal`) strictly in stream order (``max_ack_pending=1``), and each total remembers the
stream sequence it last counted (``applied_seq``). So a redelivered event is never counted twice,
and a crash between the write and the ack loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from comfyline.contracts import (
    ActiveJobs,
    Attempt,
    Cost,
    EndedJobs,
    EventKind,
    JobEvent,
    JobRecord,
    JobState,
    UsageRecord,
    WireModel,
    active_jobs_key,
    ended_jobs_key,
    owner_token,
)
from comfyline.runtime import Bus, Delivery, LastWrites, Retry, cas_pause
from comfyline.runtime.metrics import JOB_DURATION, JOBS_FINISHED

from .records import JobStore

log = logging.getLogger(__name__)
C = TypeVar("C", bound=WireModel)


def job_cost(attempts: Iterable[Attempt], rate_per_gpu_second: float) -> Cost:
    """The cost of a job: the GPU seconds of every attempt times the model's rate."""
    seconds = round(sum(a.gpu_seconds for a in attempts), 6)
    return Cost(
        gpu_seconds=seconds,
        rate_per_gpu_second=rate_per_gpu_second,
        amount=round(seconds * rate_per_gpu_second, 6),
    )


def usage_key(owner: str, model: str, day: str) -> str:
    """``<owner>.<model>.<YYYY-MM-DD>`` (owner as its subject-safe token)."""
    return f"{owner_token(owner)}.{model}.{day}"


class UsageBook:
    """Keeps the per-owner, per-model, per-day usage totals."""

    def __init__(self, bus: Bus, store: JobStore, cas_attempts: int = 25) -> None:
        self.bus = bus
        self.store = store
        self.cas_attempts = cas_attempts
        self._bucket = bus.names.bucket("usage")
        #: Each total as this process last wrote it: the next count compare-and-sets against it.
        self._totals: LastWrites[UsageRecord] = LastWrites()
        self._ended: LastWrites[EndedJobs] = LastWrites()

    async def get(self, owner: str, model: str, day: str) -> UsageRecord | None:
        """One total, or None when nothing was counted."""
        kv = await self.bus.kv(self._bucket)
        try:
            entry = await kv.get(usage_key(owner, model, day))
        except KeyNotFoundError:
            return None
        return UsageRecord.from_bytes(entry.value) if entry.value else None

    async def handle(self, delivery: Delivery) -> None:
        """Count one terminal job event (from the ``orchestrator-usage`` consumer): the job
        ended (its slot under the owner's active-jobs cap comes back) and its usage, the two
        counts written at once."""
        event = delivery.parse(JobEvent)
        seq = delivery.stream_seq
        record = event.record if event.record and event.record.id == event.job_id else None
        if record is None:  # (an event from before terminal events carried their record)
            found = await self.store.get(event.job_id)
            record = found.record if found is not None else None
        counts: list[Awaitable[None]] = []
        if event.parent is None:  # a pipeline's steps never took a slot of their own
            counts.append(
                release_active(self.bus, event.owner, seq, self.cas_attempts, self._ended)
            )
        if record is not None and record.status.terminal:
            counts.append(self._add(record, (record.finished_at or event.occurred_at), seq))
        await asyncio.gather(*counts)
        if record is None:
            log.warning("usage: no record for a finished job", extra={"job_id": event.job_id})
        elif not record.status.terminal:
            raise Retry("usage: record not terminal yet", delay=0.5)

    async def _add(self, record: JobRecord, ended_at: datetime, seq: int) -> None:
        """Add one ended job to its owner's, model's and day's total, once (``seq``)."""
        day = ended_at.date().isoformat()

        async def first() -> UsageRecord:
            return UsageRecord(owner=record.owner, model=record.model, day=day)

        def add(total: UsageRecord) -> None:
            total.jobs += 1
            total.succeeded += int(record.status is JobState.SUCCEEDED)
            total.failed += int(record.status in (JobState.FAILED, JobState.TIMED_OUT))
            if not record.steps:  # a pipeline's cost is counted on its steps' models
                total.gpu_seconds = round(total.gpu_seconds + record.cost.gpu_seconds, 6)
                total.cost = round(total.cost + record.cost.amount, 6)
            total.applied_seq = seq

        kv = await self.bus.kv(self._bucket)
        key = usage_key(record.owner, record.model, day)
        counted = await count_once(
            kv,
            key,
            UsageRecord,
            self._totals,
            first,
            lambda t: t.applied_seq >= seq,
            add,
            self.cas_attempts,
        )
        if counted:
            count_finished(record)


def count_finished(record: JobRecord) -> None:
    """The job metrics of one ended job (counted where its usage is: once per job)."""
    outcome = record.status.value
    code = record.error.code.value if record.error is not None else ""
    JOBS_FINISHED.labels(record.model, outcome, code).inc()
    if record.finished_at is not None:
        took = (record.finished_at - record.created_at).total_seconds()
        JOB_DURATION.labels(record.model, outcome).observe(max(0.0, took))


async def release_active(
    bus: Bus,
    owner: str,
    seq: int,
    cas_attempts: int = 25,
    last: LastWrites[EndedJobs] | None = None,
) -> None:
    """Count one more of ``owner``'s jobs ended, once per terminal event (``seq``): its slot
    under the owner's active-jobs cap comes back.

    Only the orchestrator writes this count, so with ``last`` (what this process wrote last) it
    is set without a read first."""
    kv = await bus.kv(bus.names.bucket("usage"))

    def add(ended: EndedJobs) -> None:
        ended.count += 1
        ended.terminal_seq = seq

    await count_once(
        kv,
        ended_jobs_key(owner),
        EndedJobs,
        last,
        lambda: _first_ended(kv, owner),
        lambda ended: ended.terminal_seq >= seq,
        add,
        cas_attempts,
    )


async def count_once(
    kv: KeyValue,
    key: str,
    model: type[C],
    last: LastWrites[C] | None,
    first: Callable[[], Awaitable[C]],
    counted: Callable[[C], bool],
    add: Callable[[C], None],
    attempts: int,
) -> bool:
    """Change the count under ``key`` with ``add`` unless ``counted`` says this change is in
    it already (a redelivered event): compare-and-set, against what this process wrote last
    (``last``) when it knows it, else against a read (``first`` when there is none yet).
    True when it was counted now. :class:`Retry` when others kept changing it."""
    for attempt in range(1, attempts + 1):
        known = last.take(key) if last is not None and attempt == 1 else None
        if known is not None:
            value, revision = known
        else:
            try:
                entry = await kv.get(key)
                value, revision = model.from_bytes(entry.value or b"{}"), entry.revision or 0
            except KeyNotFoundError:
                value, revision = await first(), 0
        if counted(value):
            if last is not None:
                last.remember(key, value, revision)
            return False
        add(value)
        try:
            if revision:
                revision = await kv.update(key, value.to_bytes(), last=revision)
            else:
                revision = await kv.create(key, value.to_bytes())
        except KeyWrongLastSequenceError:
            if known is None:  # a stale memory is just read again, at once
                await cas_pause(attempt)
            continue
        if last is not None:
            last.remember(key, value, revision)
        return True
    raise Retry(f"{key} is contended", delay=0.2)


async def _first_ended(kv: KeyValue, owner: str) -> EndedJobs:
    """An owner's first ended-jobs count. A count of active jobs written before ended jobs were
    counted apart already had every ended job taken off it, up to its ``terminal_seq``."""
    try:
        entry = await kv.get(active_jobs_key(owner))
        before = ActiveJobs.from_bytes(entry.value or b"{}").terminal_seq
    except KeyNotFoundError:
        before = 0
    return EndedJobs(owner=owner, terminal_seq=before)


TERMINAL_KINDS = (EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED, EventKind.TIMED_OUT)
