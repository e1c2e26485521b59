"""Submissions: from the gateway's ``submitted`` event to a ``RunJob`` on ``work.<model>``.

One handler per submission (durable ``orchestrator-submissions`` on ``JOBS``), every step written
before it is announced, and every step safe to run again on a redelivery:

1. create the job record (``kv.create``; a redelivery finds it and carries on from its state),
   arm the queue deadline. A job with nothing to wait for (no text to screen, a live worker, its
   model not paused) is created ``dispatched`` at once, and its work, its ``dispatched`` event and
   its queue deadline go out together: one record write, where steps 2-4 take two or more. So is
   a job whose work the gateway sent before its submission (``work_sent``: the gateway checked
   the same, and the work is stored); its work is not sent again;
2. while no worker for the model is live, stay ``queued`` and ask again shortly (a delayed nak: the
   job waits in JetStream, not in memory) until one appears or the queue deadline passes;
3. check the content policy, then enhance the prompt (:mod:`.prompts`): ``enhancing``, and the
   ``enhanced`` event;
4. write ``dispatched``, publish ``dispatched``, then publish the ``RunJob`` (message id
   ``<job_id>:run``, so a replay is deduplicated). The record says ``dispatched`` before any worker
   can see the work, so a worker's ``started`` always finds a state it may move from.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from comfyline.catalogue import Catalogue, goes_at_once, work_message
from comfyline.contracts import (
    ComfylineError,
    Enhancement,
    ErrorCode,
    EventKind,
    JobError,
    JobEvent,
    JobRecord,
    JobState,
    ModelTemplate,
    RunJob,
    utcnow,
)
from comfyline.runtime import (
    Bus,
    Delivery,
    FleetOrders,
    LiveCatalogue,
    Retry,
    heartbeat,
    job_id_var,
    model_var,
)

from .deadlines import DeadlineKeeper, template_of
from .journal import REDRIVE_WINDOW, Journal, event_msg_id
from .pipelines import Pipelines
from .prompts import PromptGate
from .records import JobStore
from .settings import Settings
from .transitions import Verdict, advance, end
from .workers import WorkerDirectory

log = logging.getLogger(__name__)


def run_input(record: JobRecord, template: ModelTemplate) -> dict[str, Any]:
    """The job's input with the final prompt written where the template reads it."""
    data = dict(record.input)
    spec, enhancement = template.prompt, record.enhancement
    if spec is not None and enhancement is not None:
        data[spec.param] = enhancement.prompt
        if spec.negative_param and enhancement.negative_prompt:
            data[spec.negative_param] = enhancement.negative_prompt
    return data


class Dispatcher:
    """Takes each submission to dispatch (or to its end), one idempotent step at a time."""

    def __init__(
        self,
        bus: Bus,
        store: JobStore,
        journal: Journal,
        deadlines: DeadlineKeeper,
        gate: PromptGate,
        workers: WorkerDirectory,
        catalogue: Catalogue,
        settings: Settings,
        pipelines: Pipelines | None = None,
        orders: FleetOrders | None = None,
    ) -> None:
        self.bus = bus
        self.pipelines = pipelines
        self.orders = orders
        self.store = store
        self.journal = journal
        self.deadlines = deadlines
        self.gate = gate
        self.workers = workers
        self.catalogue = catalogue
        self.settings = settings

    async def handle(self, delivery: Delivery) -> None:
        """Handle one ``submitted`` event (heartbeating: policy and enhancement take a while)."""
        async with heartbeat(delivery.msg, every=self.settings.ack_wait_s / 3):
            await self._handle(delivery)

    async def _handle(self, delivery: Delivery) -> None:
        event = delivery.parse(JobEvent)
        job_id_var.set(event.job_id)
        if event.kind is not EventKind.SUBMITTED or event.submission is None:
            log.warning("not a submission; dropped", extra={"kind": event.kind.value})
            return
        model_var.set(event.submission.model)
        first = self.new_record(event)
        template = template_of(self.catalogue, first)
        if template is None and isinstance(self.catalogue, LiveCatalogue):
            # Just published (a workflow's requirement set, a new model): read the bucket now.
            await self.catalogue.refresh()
            template = template_of(self.catalogue, first)
        sent = event.submission.work_sent
        at_once = template is not None and self._ready(first, template, sent)
        if at_once:
            now = utcnow()
            moved = advance(first, EventKind.DISPATCHED, now, dispatched_at=now)
            assert isinstance(moved, JobRecord), "a new job can always be dispatched"
            first = moved
        # A first delivery of a fresh submission sends its work with the record's creation,
        # not after it: the job is on its way one round trip sooner. (A worker's report that
        # comes before the record is handed back until it is there: runs.py.) Later deliveries
        # write first, then send: a repeat inside the duplicate window is one message. Work
        # the gateway sent is never sent again.
        send_now = (
            at_once
            and not sent
            and template is not None
            and delivery.num_delivered == 1
            and utcnow() - event.occurred_at < REDRIVE_WINDOW
        )
        if send_now and template is not None:
            (snapshot, created), _ = await asyncio.gather(
                self.store.create(first), self._publish_work(first, template)
            )
        else:
            snapshot, created = await self.store.create(first)
        record = snapshot.record
        if created and not (at_once and template is not None):
            log.info("job accepted")  # (one sent at once logs "job accepted and dispatched")
        if created and at_once and template is not None:
            # Sent to a live worker now: its queue deadline is armed only if it is not seen
            # starting soon (see deadlines.py); the submitted webhook goes out with the work.
            self.deadlines.arm_queue_unless_started(record)
            await asyncio.gather(
                self.journal.webhooks.schedule(record, event, f"{record.id}:submitted"),
                self._send_work(
                    record, template, replay=False, sent=send_now or sent, accepted=True
                ),
            )
            return
        if template is not None and template.engine == "pipeline" and self.pipelines:
            # Its steps are jobs with their own deadlines; the pipeline waits on them.
            if created or utcnow() - record.updated_at < REDRIVE_WINDOW:
                await self.journal.webhooks.schedule(record, event, f"{record.id}:submitted")
            if record.status is JobState.QUEUED:
                await self.pipelines.start(record, template)
            elif not record.status.terminal:
                await self.pipelines.proceed(record.id)
            return
        if record.status is JobState.QUEUED or record.last_event is EventKind.DISPATCHED:
            await self._accepted(record, event, created)
        if record.retry_of:
            await self._mark_replaced(record.retry_of, record.id)
        if record.status.terminal or record.status is JobState.RUNNING:
            return
        if template is None:
            error = JobError(code=ErrorCode.UNKNOWN_MODEL, message=f"unknown model {record.model}")
            await self.fail(record.id, error)
            return
        pending: Enhancement | None = None
        if record.status is JobState.QUEUED:
            await self._hold_if_paused(record)
            if self.settings.require_live_worker and not self.workers.live(record.model):
                await self._note_waiting(
                    record, f"waiting for a worker that serves {record.model}: none is live"
                )
                backoff = 0.25 * 2 ** (delivery.num_delivered - 1)
                delay = min(self.settings.no_worker_recheck_s, backoff)
                raise Retry("no live worker for the model yet", delay=delay)
            screened = await self._screen(record, template)
            if screened is None:
                return
            record, pending = screened
        elif record.status is JobState.ENHANCING:
            await self.journal.announce(record, EventKind.ENHANCED, replay=True)
        await self._dispatch(record, template, pending, sent)

    async def _accepted(self, record: JobRecord, event: JobEvent, created: bool) -> None:
        """Arm the queue deadline and the ``submitted`` webhook, once.

        A redelivery (the first try may have died after creating the record) re-arms them while
        the duplicate window absorbs the repeat; later on (a job waiting long for a worker is
        redelivered every few seconds) the deadline is re-armed only if it is not pending.
        """
        fresh = created or utcnow() - record.updated_at < REDRIVE_WINDOW
        if fresh or not await self.deadlines.timers.pending("queue_deadline", record.id):
            await self.deadlines.arm_queue(record, 1)
        if fresh:
            await self.journal.webhooks.schedule(record, event, f"{record.id}:submitted")

    def _ready(self, record: JobRecord, template: ModelTemplate, work_sent: bool = False) -> bool:
        """True when a new job has nothing to wait for (``goes_at_once``, the gateway's rule
        too), or its work was sent by the gateway already (which checked the same: the work is
        out)."""
        retry = record.retry_of is not None
        if work_sent:
            return template.engine != "pipeline" and not retry
        return goes_at_once(
            template,
            record.input,
            retry=retry,
            paused=bool(self.orders and self.orders.paused(record.model)),
            served=not self.settings.require_live_worker or self.workers.live(record.model),
        )

    async def _hold_if_paused(self, record: JobRecord) -> None:
        """While the model is paused the job stays queued, its record saying why."""
        pause = self.orders.paused(record.model) if self.orders else None
        if pause is None:
            return
        await self._note_waiting(record, pause.waiting_reason)
        raise Retry("the model is paused", delay=self.settings.no_worker_recheck_s)

    async def _note_waiting(self, record: JobRecord, reason: str) -> None:
        """Say on the record, and once per reason on the job's events (SSE ``waiting``), what a
        queued job waits for."""
        if record.waiting_reason == reason:
            return

        def step(current: JobRecord) -> JobRecord | Verdict:
            if current.status is not JobState.QUEUED or current.waiting_reason == reason:
                return Verdict.DROP
            return current.model_copy(update={"waiting_reason": reason})

        change = await self.store.change(record.id, step)
        if change.outcome == "applied":
            seq = int(hashlib.sha256(reason.encode()).hexdigest()[:8], 16)
            msg_id = event_msg_id(record.id, EventKind.WAITING, seq=seq)
            await self.journal.announce(change.require(), EventKind.WAITING, msg_id=msg_id)

    async def _mark_replaced(self, old_id: str, new_id: str) -> None:
        """The dead-lettered job this one retries says which job replaced it (once)."""

        def step(old: JobRecord) -> JobRecord | Verdict:
            if old.replaced_by is not None:
                return Verdict.DROP
            return old.model_copy(update={"replaced_by": new_id, "updated_at": utcnow()})

        change = await self.store.change(old_id, step)
        if change.effective:
            log.info("job replaced by a retry", extra={"replaced_by": new_id})

    def new_record(self, event: JobEvent) -> JobRecord:
        """The first record of a job, from its ``submitted`` event."""
        record = JobRecord.from_submitted(event, updated_at=utcnow())
        return record.model_copy(
            update={"queue_deadline_at": self.deadlines.queue_due(event.occurred_at, record)}
        )

    async def _screen(
        self, record: JobRecord, template: ModelTemplate
    ) -> tuple[JobRecord, Enhancement | None] | None:
        """Policy, then enhancement; None when the job ended (refused, or moved on elsewhere)."""
        try:
            await self.gate.check_policy(record, template)
        except ComfylineError as exc:
            error = JobError(code=exc.code, message=exc.message, details=exc.details)
            await self.fail(record.id, error)
            return None
        result = await self.gate.enhance(record, template)
        if result is None:
            return record, None
        enhancement, asked = result
        if not asked:
            return record, enhancement
        now = utcnow()
        change = await self.store.change(
            record.id, lambda r: advance(r, EventKind.ENHANCED, now, enhancement=enhancement)
        )
        if not change.effective or change.record is None:
            return None
        await self.journal.announce(change.record, EventKind.ENHANCED, replay=change.replay)
        return change.record, None

    async def _dispatch(
        self,
        record: JobRecord,
        template: ModelTemplate,
        pending: Enhancement | None,
        sent: bool = False,
    ) -> None:
        now = utcnow()

        def step(current: JobRecord) -> JobRecord | Verdict:
            updates: dict[str, Any] = {"dispatched_at": now, "waiting_reason": None}
            if current.enhancement is None and pending is not None:
                updates["enhancement"] = pending
            return advance(current, EventKind.DISPATCHED, now, **updates)

        change = await self.store.change(record.id, step)
        if not change.effective:
            return
        await self._send_work(change.require(), template, replay=change.replay, sent=sent)

    async def _send_work(
        self,
        dispatched: JobRecord,
        template: ModelTemplate,
        replay: bool,
        sent: bool = False,
        accepted: bool = False,
    ) -> None:
        """Publish the work (unless ``sent`` already) and announce ``dispatched``.

        Both at once: the work is on the critical path of the job, the event is not (and it is
        out long before the worker's first report comes back). Each is deduplicated.
        """
        announce = self.journal.announce(dispatched, EventKind.DISPATCHED, replay=replay)
        if sent:
            await announce
        else:
            await asyncio.gather(self._publish_work(dispatched, template), announce)
        log.info(
            "job accepted and dispatched" if accepted else "job dispatched",
            extra={"replay": replay},
        )

    async def _publish_work(self, dispatched: JobRecord, template: ModelTemplate) -> None:
        """The job's work on ``work.<model>`` (message id ``<job_id>:run``: sent once)."""
        await self.bus.publish(
            self.bus.names.work(dispatched.model, dispatched.priority),
            self.run_job(dispatched, template),
            msg_id=f"{dispatched.id}:run",
        )

    def run_job(self, record: JobRecord, template: ModelTemplate) -> RunJob:
        """The work message for ``record`` (see :func:`~comfyline.catalogue.work_message`)."""
        return work_message(
            template,
            job_id=record.id,
            owner=record.owner,
            data=run_input(record, template),
            created_at=record.created_at,
            deadline_s=record.deadline_s,
        )

    async def fail(self, job_id: str, error: JobError) -> None:
        """End the job ``failed`` with ``error`` (and announce it, once)."""
        now = utcnow()
        change = await self.store.change(job_id, lambda r: end(r, EventKind.FAILED, error, now))
        if change.effective:
            await self.journal.conclude(change.require(), replay=change.replay)
            log.info("job failed", extra={"code": error.code.value})
