"""Pipelines: a job whose model is a pipeline template runs each step as a child job.

::

    submitted (pipeline) ─▶ validate whole ─▶ dispatched ─▶ submit ready steps as child jobs
    JOBS steps.<pipeline>.<child>.{started,progress,completed,failed,...}
        ──orchestrator-pipelines──▶ step state on the pipeline's record ─▶ ``step`` event
        ──(a step ended)──────────▶ submit the steps now ready, or end the pipeline

The pipeline stays in the one state machine: ``queued -> dispatched -> running -> succeeded |
failed | cancelled``; each change of a step moves it ``running -> running`` with a ``step`` event
(SSE ``step_update``, webhook ``job.step_update``). A child is an ordinary job (its own id,
events, attempts, deadlines and cost) carrying ``parent``; its id is derived from the pipeline's
(:func:`~comfyline.catalogue.pipelines.child_job_id`), and a step is only submitted while its
child has no record, so a pipeline resumed after a crash never runs a step twice. Outputs pass
by S3 key: a later step's input names the earlier child's output (``{"job", "output"}``).

A failed (or timed out, or cancelled) step fails the pipeline with the step's code; the steps
still running are cancelled and the rest skipped, and finished steps keep their outputs. Cancel
does the same. Progress is weighted by each step's expected seconds (``expected_s``, else its run
deadline); the cost is each step's cost, and their sum.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from nats.aio.msg import Msg

from comfyline.catalogue import Catalogue, InputInvalid, validate_input
from comfyline.catalogue.pipelines import (
    PipelineInvalid,
    check_step_inputs,
    child_job_id,
    final_steps,
    ready,
    step_input,
    validate_pipeline,
)
from comfyline.contracts import (
    TERMINAL_EVENTS,
    Cost,
    ErrorCode,
    EventKind,
    JobError,
    JobEvent,
    JobRecord,
    JobState,
    ModelTemplate,
    ParentRef,
    PipelineStep,
    Progress,
    StepState,
    Submission,
    owner_token,
    utcnow,
)
from comfyline.runtime import Bus, Delivery, job_id_var

from .journal import Journal
from .records import JobStore
from .transitions import Verdict, advance, end

log = logging.getLogger(__name__)

#: The child events a pipeline listens to.
_ACTIVE = ("queued", "running")
_ENDED_BADLY = ("failed", "cancelled", "timed_out")


def overall_progress(steps: list[StepState]) -> Progress:
    """The pipeline's percent: each step's progress weighted by its expected seconds."""
    total = sum(s.weight for s in steps) or 1.0
    done = sum(s.weight * (100.0 if s.status == "succeeded" else s.progress) for s in steps)
    finished = sum(1 for s in steps if s.status == "succeeded")
    return Progress(
        percent=round(min(100.0, done / total), 2), nodes_done=finished, nodes_total=len(steps)
    )


def total_cost(steps: list[StepState]) -> Cost:
    """The pipeline's cost: the sum of its steps' (each at its own model's rate)."""
    seconds = round(sum(s.cost.gpu_seconds for s in steps), 6)
    amount = round(sum(s.cost.amount for s in steps), 6)
    rate = round(amount / seconds, 9) if seconds else 0.0
    return Cost(gpu_seconds=seconds, rate_per_gpu_second=rate, amount=amount)


def _status_of(state: JobState) -> str:
    if state in (JobState.QUEUED, JobState.ENHANCING, JobState.DISPATCHED):
        return "queued"
    return state.value


def _replace(steps: list[StepState], name: str, **changes: Any) -> list[StepState]:
    return [s.model_copy(update=changes) if s.name == name else s for s in steps]


def child_parent_key(msg: Msg) -> str | None:
    """Order one pipeline's step events: ``steps.<parent_id>.<job_id>.<kind>``."""
    parts = msg.subject.split(".")
    return parts[-3] if len(parts) >= 4 else None


class Pipelines:
    """Starts pipelines, follows their children, and ends them."""

    def __init__(self, bus: Bus, store: JobStore, journal: Journal, catalogue: Catalogue) -> None:
        self.bus = bus
        self.store = store
        self.journal = journal
        self.catalogue = catalogue

    def template(self, record: JobRecord) -> ModelTemplate:
        """The pipeline's template (the version it was submitted against, else the latest)."""
        try:
            return self.catalogue.get(record.model, record.template_version)
        except Exception:
            return self.catalogue.get(record.model)

    def _weight(self, model: str) -> float:
        try:
            return self.catalogue.get(model).expected_run_s
        except Exception:
            return 1.0

    # --- start ------------------------------------------------------------------------------------
    async def start(self, record: JobRecord, template: ModelTemplate) -> None:
        """Validate the whole pipeline, write it ``dispatched`` with its steps, submit the first."""
        try:
            validate_pipeline(template, self.catalogue)
            check_step_inputs(template, self.catalogue, record.input)
        except (PipelineInvalid, InputInvalid) as exc:
            await self._fail(
                record.id, JobError(code=exc.code, message=exc.message, details=exc.details)
            )
            return
        now = utcnow()
        steps = [
            StepState(name=s.name, model=s.model, weight=self._weight(s.model))
            for s in template.steps
        ]

        def step(current: JobRecord) -> JobRecord | Verdict:
            return advance(
                current,
                EventKind.DISPATCHED,
                now,
                dispatched_at=now,
                steps=current.steps or steps,
                progress=overall_progress(current.steps or steps),
            )

        change = await self.store.change(record.id, step)
        if change.effective:
            await self.journal.announce(
                change.require(), EventKind.DISPATCHED, replay=change.replay
            )
            log.info("pipeline dispatched", extra={"steps": [s.name for s in steps]})
        await self.proceed(record.id)

    # --- drive ------------------------------------------------------------------------------------
    async def proceed(self, job_id: str) -> None:
        """Submit every step whose inputs exist, or end the pipeline once its steps say so."""
        found = await self.store.get(job_id)
        if found is None or found.record.status.terminal:
            return
        record = found.record
        template = self.template(record)
        bad = next((s for s in record.steps if s.status in _ENDED_BADLY), None)
        if bad is not None:
            await self._step_failed(record, bad)
            return
        if record.steps and all(s.status == "succeeded" for s in record.steps):
            await self._complete(record, template)
            return
        succeeded = {s.name for s in record.steps if s.status == "succeeded"}
        begun = {s.name for s in record.steps if s.status != "pending"}
        submissions: dict[str, Submission] = {}
        for step in ready(template, succeeded, begun):
            try:
                submissions[step.name] = self._submission(record, step)
            except (InputInvalid, PipelineInvalid) as exc:
                error = JobError(
                    code=exc.code,
                    message=f"step {step.name} ({step.model}): {exc.message}",
                    details={"step": step.name, **exc.details},
                )
                await self._fail(record.id, error)
                return
        job_ids = {name: child_job_id(record.id, name) for name in submissions}
        if submissions:

            def mark(current: JobRecord) -> JobRecord | Verdict:
                if current.status.terminal:
                    return Verdict.DROP
                steps = current.steps
                for name in submissions:
                    if next(s for s in steps if s.name == name).status == "pending":
                        steps = _replace(steps, name, status="queued", job_id=job_ids[name])
                if steps == current.steps:
                    return Verdict.REPLAY
                return current.model_copy(update={"steps": steps, "updated_at": utcnow()})

            change = await self.store.change(record.id, mark)
            if not change.effective:
                return
            record = change.require()
        for state in record.steps:
            if state.status == "queued" and state.job_id is not None:
                await self._submit(record, state, submissions.get(state.name))

    def _submission(self, record: JobRecord, step: PipelineStep) -> Submission:
        """A step's child job as the gateway would have submitted it (its input validated)."""
        model = self.catalogue.get(step.model)
        outputs = {s.name: s.outputs for s in record.steps}
        ids = {s.name: s.job_id or child_job_id(record.id, s.name) for s in record.steps}
        return Submission(
            model=model.name,
            template_version=model.version,
            input=validate_input(model, step_input(step, record.input, outputs, ids)),
            metadata=record.metadata,
            response_format=record.response_format,
            enhance=model.enhance,
            content_tier=record.content_tier,
            request_id=record.request_id,
            parent=ParentRef(job_id=record.id, step=step.name),
        )

    async def _submit(self, record: JobRecord, state: StepState, sub: Submission | None) -> None:
        """Publish a step's ``submitted`` unless its child already exists (so never twice)."""
        assert state.job_id is not None
        if await self.store.get(state.job_id) is not None:
            return
        if sub is None:  # marked before a crash, its record not made yet: build it again
            step = next(s for s in self.template(record).steps if s.name == state.name)
            sub = self._submission(record, step)
        event = JobEvent(
            job_id=state.job_id,
            owner=record.owner,
            model=sub.model,
            kind=EventKind.SUBMITTED,
            status=JobState.QUEUED,
            submission=sub,
            parent=sub.parent,
        )
        subject = self.bus.names.job_event(
            owner_token(record.owner), state.job_id, EventKind.SUBMITTED.value
        )
        await self.bus.publish(subject, event, msg_id=f"{state.job_id}:submitted")
        log.info("pipeline step submitted", extra={"step": state.name, "child": state.job_id})

    # --- children ---------------------------------------------------------------------------------
    async def on_child_event(self, delivery: Delivery) -> None:
        """A child job moved: record it on the pipeline, announce ``step``, go on if it ended."""
        event = delivery.parse(JobEvent)
        if event.parent is None:
            return
        parent_id, name = event.parent.job_id, event.parent.step
        job_id_var.set(parent_id)
        now = utcnow()
        changes: dict[str, Any] = {"status": _status_of(event.status)}
        if event.kind is EventKind.PROGRESS and event.progress is not None:
            changes["progress"] = event.progress.percent
        if event.kind in TERMINAL_EVENTS:
            child = await self.store.get(event.job_id)
            if child is not None:
                changes.update(
                    outputs=child.record.outputs, cost=child.record.cost, error=child.record.error
                )
            if event.kind is EventKind.COMPLETED:
                changes["progress"] = 100.0

        def step(record: JobRecord) -> JobRecord | Verdict:
            return self._step_changed(record, name, changes, now)

        change = await self.store.change(parent_id, step)
        if change.effective:
            record = change.require()
            state = next((s for s in record.steps if s.name == name), None)
            if state is not None and not record.status.terminal:
                await self.journal.announce(
                    record,
                    EventKind.STEP,
                    replay=change.replay,
                    msg_id=f"{parent_id}:step:{name}:{delivery.stream_seq}",
                    step=state,
                    progress=record.progress,
                )
        if event.kind in TERMINAL_EVENTS:
            await self.proceed(parent_id)

    def _step_changed(
        self, record: JobRecord, name: str, changes: dict[str, Any], now: datetime
    ) -> JobRecord | Verdict:
        current = next((s for s in record.steps if s.name == name), None)
        if current is None:
            return Verdict.DROP
        ended = current.status in ("succeeded", *_ENDED_BADLY, "skipped")
        if ended:  # a step's story ends once; a repeat of its ending is replayed
            return Verdict.REPLAY if changes["status"] == current.status else Verdict.DROP
        if changes["status"] == "queued" and current.status == "running":
            return Verdict.DROP
        if changes.get("progress", current.progress) < current.progress:
            changes = {**changes, "progress": current.progress}
        updated = current.model_copy(update=changes)
        if updated == current:
            return Verdict.DROP
        steps = _replace(record.steps, name, **changes)
        if record.status.terminal:  # e.g. a step cancelled after the pipeline ended
            return record.model_copy(update={"steps": steps, "updated_at": now})
        return advance(
            record,
            EventKind.STEP,
            now,
            steps=steps,
            progress=overall_progress(steps),
            started_at=record.started_at or now,
            cost=total_cost(steps),
        )

    # --- endings ----------------------------------------------------------------------------------
    async def _complete(self, record: JobRecord, template: ModelTemplate) -> None:
        finals = final_steps(template)
        outputs = [
            ref.model_copy(update={"index": i})
            for i, ref in enumerate(r for s in record.steps if s.name in finals for r in s.outputs)
        ]
        now = utcnow()

        def step(current: JobRecord) -> JobRecord | Verdict:
            return end(
                current,
                EventKind.COMPLETED,
                None,
                now,
                outputs=outputs,
                progress=overall_progress(current.steps),
                cost=total_cost(current.steps),
                started_at=current.started_at or now,
            )

        change = await self.store.change(record.id, step)
        if change.effective:
            await self.journal.conclude(change.require(), replay=change.replay)
            log.info("pipeline succeeded")

    async def _step_failed(self, record: JobRecord, bad: StepState) -> None:
        cause = bad.error or JobError(code=ErrorCode.INTERNAL_ERROR, message="the step failed")
        error = JobError(
            code=cause.code,
            message=f"step {bad.name} ({bad.model}) {bad.status}: {cause.message}",
            node_id=cause.node_id,
            node_type=cause.node_type,
            details={"step": bad.name, "job_id": bad.job_id, **cause.details},
        )
        await self._fail(record.id, error)

    async def _fail(self, job_id: str, error: JobError) -> None:
        """End the pipeline ``failed``: running steps are cancelled, the rest skipped."""
        now = utcnow()
        change = await self.store.change(
            job_id,
            lambda r: end(r, EventKind.FAILED, error, now, steps=_skip_pending(r.steps)),
        )
        if change.effective:
            record = change.require()
            await self.journal.conclude(record, replay=change.replay)
            await self.stop_steps(record, f"pipeline {record.id} failed")
            log.info("pipeline failed", extra={"code": error.code.value})

    async def cancelled(self, record: JobRecord, reason: str) -> None:
        """The pipeline was cancelled: skip the steps not started, cancel the running ones."""
        now = utcnow()

        def step(current: JobRecord) -> JobRecord | Verdict:
            steps = _skip_pending(current.steps)
            if steps == current.steps:
                return Verdict.DROP
            return current.model_copy(update={"steps": steps, "updated_at": now})

        await self.store.change(record.id, step)
        await self.stop_steps(record, reason)

    async def stop_steps(self, record: JobRecord, reason: str) -> None:
        """Cancel every child still queued or running (each ends ``cancelled`` once)."""
        for state in record.steps:
            if state.status in _ACTIVE and state.job_id:
                await cancel_job(self.store, self.journal, state.job_id, reason)


def _skip_pending(steps: list[StepState]) -> list[StepState]:
    return [
        s.model_copy(update={"status": "skipped"}) if s.status == "pending" else s for s in steps
    ]


async def cancel_job(
    store: JobStore, journal: Journal, job_id: str, reason: str
) -> JobRecord | None:
    """Mark a job ``cancelled`` (unless it has ended) and tell its worker to stop."""
    now = utcnow()
    error = JobError(code=ErrorCode.CANCELLED, message=reason)
    change = await store.change(
        job_id, lambda r: end(r, EventKind.CANCELLED, error, now, cancel_requested=True)
    )
    if change.outcome == "missing":
        return None
    record = change.require()
    if change.effective:
        await journal.conclude(record, replay=change.replay, stop_worker=True, reason=reason)
    return record
