"""Cancel commands: ``control.cancel.<job_id>`` is heard by every worker; the holder acts.

A plain core-NATS subscription (no queue group), because only the worker holding the job knows
where its prompt runs. A command for a job nobody here holds is remembered for a while, so a job
fetched a moment after its cancel still stops before it runs. ``heard_since`` says whether the
listener has been subscribed without a break since a given time, so a job published after that
needs no read of its record to know it was not cancelled or ended before it ran.
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
CLOCK_MARGIN_S = 1.0  # JetStream's timestamps come from the server's clock


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
        self._since: float | None = None
        self._reconnects = 0

    async def start(self) -> None:
        """Subscribe to every cancel command of this namespace."""
        self._sub = await self.bus.nc.subscribe(self.bus.names.all_cancels(), cb=self._on_message)
        await self.bus.nc.flush()  # the server has the subscription from here on
        self._reconnects = self._reconnect_count()
        self._since = time.time()

    def _reconnect_count(self) -> int:
        return int(self.bus.nc.stats.get("reconnects", 0))

    def heard_since(self, published: float) -> bool:
        """True when every cancel command sent at or after ``published`` (epoch seconds) has
        reached this listener and is still remembered: subscribed before it, no reconnect since
        (core NATS drops messages across one), and within the memory window."""
        reconnects = self._reconnect_count()
        if reconnects != self._reconnects:
            self._reconnects, self._since = reconnects, time.time()
        return (
            self._sub is not None
            and self._since is not None
            and published >= self._since + CLOCK_MARGIN_S
            and time.time() - published < REMEMBER_S / 2
        )

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
