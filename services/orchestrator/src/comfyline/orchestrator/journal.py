"""The job's events on ``JOBS``: published once each, always after the record says so.

Every later event of a job (after the gateway's ``submitted``) is published here, from the record
that was just written, with a deterministic message id: ``<job_id>:<kind>``,
``<job_id>:started:<n>`` for a redelivered run's start, ``<job_id>:progress:<runs seq>`` for
progress. Two guards make "published once" hold:

- the stream's duplicate window drops a second publish of the same id (two orchestrators, or a
  retry of a publish whose ack was lost);
- when an event is *replayed* (its record was written, but the writer may have died before
  publishing; see :mod:`.transitions`), the last message on the event's subject is read first and
  the event is only published if that message is not already it. This holds however long the
  replay came after the first try, beyond the duplicate window. The event's webhook is re-armed
  only within :data:`REDRIVE_WINDOW` of the first publish, where its message id deduplicates it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from nats.js.errors import NotFoundError

from comfyline.contracts import (
    MSG_ID,
    TERMINAL_EVENTS,
    CancelCommand,
    EventKind,
    JobError,
    JobEvent,
    JobRecord,
    PreviewRef,
    Progress,
    StepState,
    owner_token,
    utcnow,
)
from comfyline.runtime import Bus

from .timers import Timers
from .webhooks import Webhooks

log = logging.getLogger(__name__)

#: The events of a pipeline's step job its pipeline follows (told to it on ``steps.…`` too).
STEP_KINDS = frozenset({EventKind.STARTED, EventKind.PROGRESS, *TERMINAL_EVENTS})

#: How long after a first try an idempotent side effect (a timer, a webhook) may be re-driven:
#: well inside the streams' two-minute duplicate window, which absorbs the repeat.
REDRIVE_WINDOW = timedelta(seconds=60)


def event_msg_id(job_id: str, kind: EventKind, attempt: int = 1, seq: int | None = None) -> str:
    """The message id of one job event."""
    if kind in (EventKind.PROGRESS, EventKind.PREVIEW):
        return f"{job_id}:{kind.value}:{seq}"
    if kind is EventKind.STARTED and attempt > 1:
        return f"{job_id}:started:{attempt}"
    if kind is EventKind.RETRYING:
        return f"{job_id}:retrying:{attempt}"
    if kind is EventKind.WAITING:
        return f"{job_id}:waiting:{seq or 0}"
    return f"{job_id}:{kind.value}"


def job_event(
    record: JobRecord,
    kind: EventKind,
    *,
    progress: Progress | None = None,
    preview: PreviewRef | None = None,
    step: StepState | None = None,
    error: JobError | None = None,
    retry_in_s: float | None = None,
) -> JobEvent:
    """The event that announces ``record`` after an event of ``kind``."""
    ended = kind in TERMINAL_EVENTS
    shows_prompt = kind in (EventKind.ENHANCED, EventKind.COMPLETED)
    return JobEvent(
        job_id=record.id,
        owner=record.owner,
        model=record.model,
        kind=kind,
        status=record.status,
        attempt=record.attempts,
        enhancement=record.enhancement if shows_prompt else None,
        progress=progress or (record.progress if kind is EventKind.COMPLETED else None),
        preview=preview,
        outputs=record.outputs if kind is EventKind.COMPLETED else [],
        error=record.error if ended else error,
        retry_in_s=retry_in_s,
        waiting_reason=(
            record.waiting_reason if kind in (EventKind.WAITING, EventKind.RETRYING) else None
        ),
        parent=record.parent,
        step=step,
        steps=record.steps if (ended or step is not None) else [],
        record=record if ended else None,
    )


class Journal:
    """Publishes job events on ``JOBS`` exactly once, then hands them to the webhooks."""

    def __init__(self, bus: Bus, timers: Timers, webhooks: Webhooks) -> None:
        self.bus = bus
        self.names = bus.names
        self.timers = timers
        self.webhooks = webhooks

    def subject(self, record: JobRecord, kind: EventKind) -> str:
        """``jobs.<owner>.<job_id>.<kind>``."""
        return self.names.job_event(owner_token(record.owner), record.id, kind.value)

    async def announce(
        self,
        record: JobRecord,
        kind: EventKind,
        *,
        replay: bool = False,
        msg_id: str | None = None,
        progress: Progress | None = None,
        preview: PreviewRef | None = None,
        step: StepState | None = None,
        error: JobError | None = None,
        retry_in_s: float | None = None,
    ) -> JobEvent:
        """Publish the event of ``kind`` for ``record`` (once) and schedule its webhook."""
        msg_id = msg_id or event_msg_id(record.id, kind, record.attempts)
        event = job_event(
            record,
            kind,
            progress=progress,
            preview=preview,
            step=step,
            error=error,
            retry_in_s=retry_in_s,
        )
        subject = self.subject(record, kind)
        published_at = await self.published(subject, msg_id) if replay else None
        if published_at is None:
            await asyncio.gather(
                self.bus.publish(subject, event, msg_id=msg_id),
                self._tell_pipeline(record, kind, event, msg_id, replay),
            )
        else:
            log.info("event already published", extra={"job_id": record.id, "kind": kind.value})
            await self._tell_pipeline(record, kind, event, msg_id, replay)
        if published_at is None or utcnow() - published_at < REDRIVE_WINDOW:
            await self.webhooks.schedule(record, event, msg_id)
        return event

    async def _tell_pipeline(
        self, record: JobRecord, kind: EventKind, event: JobEvent, msg_id: str, replay: bool
    ) -> None:
        """A step job's event, again on ``steps.<parent>.<job>.<kind>`` for its pipeline (once,
        as the event itself: a replay publishes it only if it is not the subject's last)."""
        if record.parent is None or kind not in STEP_KINDS:
            return
        subject = self.names.step_event(record.parent.job_id, record.id, kind.value)
        step_id = f"{msg_id}:step"
        if replay and await self.published(subject, step_id) is not None:
            return
        await self.bus.publish(subject, event, msg_id=step_id)

    async def published(self, subject: str, msg_id: str) -> datetime | None:
        """When the last message on ``subject`` was stored, if it carries ``msg_id``."""
        try:
            last = await self.bus.js.get_last_msg(self.names.stream("JOBS"), subject)
        except NotFoundError:
            return None
        if not (last.headers and last.headers.get(MSG_ID) == msg_id):
            return None
        return last.time or utcnow()

    async def conclude(
        self,
        record: JobRecord,
        *,
        replay: bool = False,
        stop_worker: bool = False,
        reason: str = "the job has ended",
    ) -> None:
        """Announce a finished job and tell any worker holding it to stop.

        Its deadline timers are left armed: when due they find the job ended and are acked.
        (Purging them here, under the consumer that holds them nak-delayed, made the server drop
        other jobs' timers from the consumer's state.)
        """
        await self.announce(record, record.last_event, replay=replay)
        if stop_worker:
            await self.stop_worker(record.id, reason)

    async def stop_worker(self, job_id: str, reason: str) -> None:
        """``control.cancel.<job_id>``: the worker holding the job interrupts it or skips it."""
        await self.bus.send(self.names.cancel(job_id), CancelCommand(job_id=job_id, reason=reason))
