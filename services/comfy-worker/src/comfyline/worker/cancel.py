"""Cancel commands: ``control.cancel.<job_id>`` is heard by every worker; the holder acts.

A plain core-NATS subscription (no queue group), because only the worker holding the job knows
where its prompt runs. A command for a job nobody here holds is remembered for a while, so a job
fetched a moment after its cancel still stops before it runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from comfyline.contracts import CancelCommand
from comfyline.runtime import Bus

log = logging.getLogger(__name__)
REMEMBER_S = 600.0
REMEMBER_MAX = 10_000


class Cancellable(Protocol):
    """A job in progress that can be told to stop."""

    async def cancel(self, reason: str) -> None: ...


class CancelListener:
    """Routes cancel commands to the jobs this worker holds."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._active: dict[str, Cancellable] = {}
        self._recent: dict[str, tuple[float, str]] = {}
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Subscribe to every cancel command of this namespace."""
        self._sub = await self.bus.nc.subscribe(self.bus.names.all_cancels(), cb=self._on_message)

    async def stop(self) -> None:
        """Stop listening."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def register(self, job_id: str, job: Cancellable) -> str | None:
        """Hold ``job``; returns the reason if it was already cancelled, else None."""
        self._forget_old()
        if job_id in self._recent:
            return self._recent.pop(job_id)[1]
        self._active[job_id] = job
        return None

    def unregister(self, job_id: str) -> None:
        """The job is no longer held here."""
        self._active.pop(job_id, None)

    async def _on_message(self, msg: Msg) -> None:
        try:
            command = CancelCommand.from_bytes(msg.data)
            job_id, reason = command.job_id, command.reason
        except ValueError:
            job_id, reason = msg.subject.rsplit(".", 1)[-1], "cancelled"
        job = self._active.get(job_id)
        if job is None:
            self._recent[job_id] = (time.monotonic(), reason)
            return
        log.info("cancelling job", extra={"job_id": job_id, "reason": reason})
        task = asyncio.create_task(self._cancel(job_id, job, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel(self, job_id: str, job: Cancellable, reason: str) -> None:
        try:
            await job.cancel(reason)
        except Exception:
            log.exception("cancelling a job failed", extra={"job_id": job_id})

    def _forget_old(self) -> None:
        cutoff = time.monotonic() - REMEMBER_S
        for job_id, (at, _) in list(self._recent.items()):
            if at < cutoff or len(self._recent) > REMEMBER_MAX:
                del self._recent[job_id]
