"""Durable timers: deadlines and webhook retries kept in JetStream, never in a process's sleep.

A timer is a :class:`~comfyline.contracts.Timer` message on ``timers.<kind>.<job_id>`` in the
``TIMERS`` work-queue stream, published with a deterministic message id so arming it twice makes
one message. The durable consumer ``orchestrator-timers`` (shared by every orchestrator) receives
it at once; until ``due_at`` the handler naks it with ``delay = due_at - now``, so the server
hands it back when it is due, to whichever orchestrator is alive then. When due, the handler for
its kind acts (idempotently: it re-checks the job record) and the message is acked, so it fires
once with any number of orchestrators and across restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from nats.js.errors import NotFoundError

from comfyline.contracts import Timer, utcnow
from comfyline.runtime import Bus, Delivery, Retry, job_id_var

log = logging.getLogger(__name__)

TimerKind = Literal["queue_deadline", "run_deadline", "webhook"]
TimerHandler = Callable[[Timer], Awaitable[None]]

#: A timer this close to due waits it out in the handler rather than round-tripping through the
#: server again.
EARLY_S = 0.02
DEADLINE_KINDS: tuple[TimerKind, ...] = ("queue_deadline", "run_deadline")


class Timers:
    """Arms timers, and fires them when due through the handler registered for their kind."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.names = bus.names
        self._handlers: dict[str, TimerHandler] = {}

    def on(self, kind: TimerKind, handler: TimerHandler) -> None:
        """Register what a timer of ``kind`` does when it fires."""
        self._handlers[kind] = handler

    async def arm(
        self,
        kind: TimerKind,
        job_id: str,
        due_at: datetime,
        msg_id: str,
        payload: dict[str, Any] | None = None,
    ) -> None:
        """Arm a timer; the same ``msg_id`` arms it only once (within the duplicate window)."""
        timer = Timer(job_id=job_id, kind=kind, due_at=due_at, payload=payload or {})
        await self.bus.publish(self.names.timer(kind, job_id), timer, msg_id=msg_id)

    async def pending(self, kind: TimerKind, job_id: str) -> bool:
        """True while a timer of ``kind`` for the job is armed and has not fired."""
        try:
            await self.bus.js.get_last_msg(
                self.names.stream("TIMERS"), self.names.timer(kind, job_id)
            )
        except NotFoundError:
            return False
        return True

    async def handle(self, delivery: Delivery) -> None:
        """Fire one timer if due, or hand it back to the server until it is."""
        timer = delivery.parse(Timer)
        job_id_var.set(timer.job_id)
        remaining = (timer.due_at - utcnow()) / timedelta(seconds=1)
        if remaining > EARLY_S:
            raise Retry("not due yet", delay=remaining)
        if remaining > 0:  # due within EARLY_S: wait it out here, never fire before it is due
            await asyncio.sleep(remaining)
        handler = self._handlers.get(timer.kind)
        if handler is None:
            log.error("no handler for timer kind; dropping it", extra={"kind": timer.kind})
            return
        await handler(timer)
