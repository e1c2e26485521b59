"""Cancel requests (``orchestrator.cancel.v1``): the one writer of job state cancels jobs too.

The gateway sends a :class:`~comfyline.contracts.CancelRequest` (owner ``*`` for an admin) and
gets a :class:`~comfyline.contracts.CancelReply`. At every state before the end (queued, enhancing,
dispatched, running) the job is marked ``cancelled`` at once, and ``control.cancel.<job_id>`` is
sent: a worker running it interrupts ComfyUI, and a worker that pulls it later reads the record
and skips it. An ended job is refused with ``job_already_terminal`` (HTTP 409 at the gateway);
another owner's job, or no job, answers ``not_found``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from nats.aio.subscription import Subscription

from comfyline.contracts import (
    CancelReply,
    CancelRequest,
    ErrorCode,
    EventKind,
    JobError,
    JobRecord,
    owner_token,
    utcnow,
)
from comfyline.runtime import Bus, Delivery, job_id_var, serve

from .journal import Journal
from .records import JobStore
from .transitions import end

log = logging.getLogger(__name__)
ADMIN = "*"


def owns(owner: str, record: JobRecord) -> bool:
    """True when ``owner`` (an owner id or its token, ``*`` for an admin) may cancel ``record``."""
    return owner == ADMIN or owner in (record.owner, owner_token(record.owner))


class Canceller:
    """Answers cancel requests in the orchestrators' queue group."""

    def __init__(
        self,
        bus: Bus,
        store: JobStore,
        journal: Journal,
        on_cancelled: Callable[[JobRecord, str], Awaitable[None]] | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.journal = journal
        self.on_cancelled = on_cancelled
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Serve ``orchestrator.cancel.v1``."""
        names = self.bus.names
        self._sub = await serve(
            self.bus, names.cancel_request(), names.queue_group("orchestrator"), self.respond
        )

    async def stop(self) -> None:
        """Stop serving."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def respond(self, delivery: Delivery) -> CancelReply:
        """Cancel one job, or say why not."""
        request = delivery.parse(CancelRequest)
        job_id_var.set(request.job_id)
        found = await self.store.get(request.job_id)
        if found is None or not owns(request.owner, found.record):
            return CancelReply(ok=False, code=ErrorCode.NOT_FOUND.value, error="no such job")
        now = utcnow()
        error = JobError(code=ErrorCode.CANCELLED, message=request.reason)
        change = await self.store.change(
            request.job_id,
            lambda r: end(r, EventKind.CANCELLED, error, now, cancel_requested=True),
        )
        record = change.require()
        if change.effective:
            await self.journal.conclude(
                record, replay=change.replay, stop_worker=True, reason=request.reason
            )
            if record.steps and self.on_cancelled is not None:  # a pipeline: stop its steps
                await self.on_cancelled(record, request.reason)
        if change.outcome == "applied":
            log.info("job cancelled")
            return CancelReply(ok=True, status=record.status)
        return CancelReply(
            ok=False,
            status=record.status,
            code=ErrorCode.JOB_ALREADY_TERMINAL.value,
            error=f"the job is already {record.status.value}",
        )
