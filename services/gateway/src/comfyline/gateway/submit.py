"""Submitting a job: validate, check limits, honour ``Idempotency-Key``, publish ``submitted``.

The gateway writes a job's first event only; the orchestrator writes its record and every later
event. The event is published with ``Nats-Msg-Id: <job_id>:submitted``, so a retried publish
is deduplicated by the stream.

A plain job (not a pipeline or a retry, no text for the content policy or the enhancer) for a
model that a live worker serves and no admin paused needs nothing from the orchestrator before
it runs: with ``send_work`` (on by default) the gateway publishes its work (``work.<model>``,
message id ``<job_id>:run``), then the submission, which says so (``work_sent``); the
orchestrator creates its record ``dispatched`` and sends no work of its own. The job starts
without waiting for the orchestrator to pick it up (its fetch, the record's write and the
work's publish). If the submission cannot be stored after its work was, the work is deleted
from the stream again (a worker that took it already runs it; its reports find no record and
are dropped after a while).

Idempotency: ``<owner>.<sha256(key)>`` in the ``idempotency`` bucket maps a client's key to the
job it made and the SHA-256 of the request body. The same key with the same body answers the
same job; with another body, 409. The record is created (``kv.create``: first writer wins) just
before publishing, and removed again if the publish fails, so a retry can succeed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from nats.js.api import PubAck
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from comfyline.catalogue import (
    TemplateError,
    UnknownModel,
    goes_at_once,
    validate_input,
    with_files,
    work_message,
)
from comfyline.catalogue.pipelines import PipelineInvalid, check_step_inputs, validate_pipeline
from comfyline.contracts import (
    ErrorCode,
    EventKind,
    IdempotencyRecord,
    JobEvent,
    JobRecord,
    JobState,
    ModelTemplate,
    Priority,
    RunJob,
    Submission,
    WebhookSpec,
    new_job_id,
    utcnow,
)
from comfyline.runtime import Bus, FleetOrders, LiveCatalogue
from comfyline.runtime.metrics import JOBS_SUBMITTED
from comfyline.runtime.ssrf import Policy

from .auth import Principal
from .errors import ApiError
from .fleet import Fleet
from .fleetwatch import FleetWatch
from .inputs import InputResolver
from .joblog import JobLog
from .kv import get_model, nats_errors
from .limits import Limits
from .schemas import JobCreate
from .settings import Settings
from .ssrf import check_webhook_url
from .workflows import Workflows, is_workflow_model

MAX_PROMPT_CHARS = 2000

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Submitted:
    """The job a submission made (or found again, for an idempotent retry)."""

    record: JobRecord
    replayed: bool


#: Beyond the publish's own retry time, how long a recorded Idempotency-Key counts as in flight.
IN_FLIGHT_MARGIN_S = 5.0


def in_progress() -> ApiError:
    """409 for a retry that arrives while the request with its key is still being handled."""
    return ApiError(
        409,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        "a request with this Idempotency-Key is in progress; retry shortly",
        headers={"Retry-After": "1"},
    )


def body_digest(body: JobCreate) -> str:
    """A stable digest of the request body (key order and whitespace do not matter)."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_prompts(template: ModelTemplate, data: dict[str, Any]) -> None:
    """Prompts are at most 2000 characters, whatever a template's schema says."""
    spec = template.prompt
    fields = {"prompt", "negative_prompt"}
    if spec is not None:
        fields |= {spec.param, *([spec.negative_param] if spec.negative_param else [])}
    for name in sorted(fields):
        value = data.get(name)
        if isinstance(value, str) and len(value) > MAX_PROMPT_CHARS:
            raise ApiError(
                422,
                ErrorCode.VALIDATION_ERROR,
                f"{name} is longer than {MAX_PROMPT_CHARS} characters",
                details={
                    "errors": [{"field": name, "message": f"at most {MAX_PROMPT_CHARS} characters"}]
                },
            )


def check_pipeline(template: ModelTemplate, registry: LiveCatalogue) -> None:
    """A pipeline is checked whole before it is accepted (422 with the problem's code)."""
    try:
        validate_pipeline(template, registry)
    except PipelineInvalid as exc:
        raise ApiError(422, exc.code, exc.message, details=exc.details) from exc


def lane_of(principal: Principal, wanted: Priority | None) -> Priority:
    """The job's priority: what was asked (the key's lane, else interactive, by default)."""
    if wanted is None:
        return principal.lane or "interactive"
    if principal.lane is not None and wanted != principal.lane:
        raise ApiError(
            403,
            ErrorCode.LANE_NOT_ALLOWED,
            f"this key may submit {principal.lane} jobs only",
            details={"lane": principal.lane, "priority": wanted},
        )
    return wanted


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request checked and validated, ready to become a ``submitted`` event."""

    template: ModelTemplate
    body: JobCreate
    input: dict[str, Any]
    priority: Priority


class Submitter:
    """Turns a valid request into a ``submitted`` event."""

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        registry: LiveCatalogue,
        jobs: JobLog,
        fleet: Fleet,
        limits: Limits,
        inputs: InputResolver,
        idempotency: KeyValue,
        workflows: Workflows | None = None,
        orders: FleetOrders | None = None,
        fleetwatch: FleetWatch | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.registry = registry
        self.jobs = jobs
        self.fleet = fleet
        self.limits = limits
        self.inputs = inputs
        self.idempotency = idempotency
        self.workflows = workflows
        self.orders = orders
        self.fleetwatch = fleetwatch

    async def check_capacity(self, principal: Principal, template: ModelTemplate) -> None:
        """503 ``model_unavailable`` at once when live servers have reported and none of them can
        run the model, naming what each lacks. While no server has reported yet (a fleet that is
        starting) the job is queued: capacity may be coming. A model may opt into queueing
        always (``queue_without_capacity``), and so may a key (its limit of that name set to 1)."""
        opted_in = (self.limits.limit_of(principal, "queue_without_capacity", 0) or 0) > 0
        if template.engine != "comfyui" or template.queue_without_capacity or opted_in:
            return
        if is_workflow_model(template):  # checked against the servers' /object_info already
            return
        found = (await self.fleet.availability([template.name]))[template.name]
        if found.refused_by_fleet and not found.paused:
            raise ApiError(
                503,
                ErrorCode.MODEL_UNAVAILABLE,
                f"{template.name} cannot run now: {found.reason}",
                details={"model": template.name, "reason": found.reason, "missing": found.missing},
                headers={"Retry-After": "30"},
            )

    async def submit(
        self,
        principal: Principal,
        body: JobCreate,
        idempotency_key: str | None,
        request_id: str | None,
        before_publish: Callable[[str], None] | None = None,
    ) -> Submitted:
        """Validate and publish one job (or find the job an earlier identical request made).

        ``before_publish`` is called with the new job's id just before its ``submitted`` is
        published (to listen to its events from their start)."""
        template, raw = await self.model_of(principal, body)
        idem_key = self._idem_key(principal, idempotency_key) if idempotency_key else None
        digest = body_digest(body) if idem_key else ""  # (only an Idempotency-Key needs it)
        job_id = None
        if idem_key:
            earlier = await self._earlier(idem_key, digest)
            if earlier is not None:
                record = await self.jobs.find(earlier.job_id)
                if record is not None:
                    return Submitted(record, replayed=True)
                if utcnow() - earlier.created_at < self._in_flight:
                    # The request that recorded it may still publish it (and take its slot).
                    raise in_progress()
                job_id = earlier.job_id  # recorded, never published (its gateway died): now
        await self.limits.check_quota(principal)
        # Each lane has its own cap: a batch backlog never fills the interactive queue.
        lane = lane_of(principal, body.priority)
        depth = await self.fleet.queue_depth(template.name, lane=lane)
        self.limits.check_queue(principal, template, depth)
        await self.check_capacity(principal, template)
        prepared = await self.prepare(principal, body, (template, raw))
        if job_id is None:
            job_id = new_job_id()
            if idem_key and not await self._claim(idem_key, digest, job_id):
                return await self._concurrent(idem_key, digest)
        event = self.submitted(principal, prepared, job_id, request_id)
        if before_publish is not None:
            before_publish(job_id)
        try:
            await self.publish(principal, event)
        except Exception:
            if idem_key:
                await self._release(idem_key)
            raise
        JOBS_SUBMITTED.labels(template.name).inc()
        return Submitted(JobRecord.from_submitted(event), replayed=False)

    async def model_of(
        self, principal: Principal, body: JobCreate
    ) -> tuple[ModelTemplate, dict[str, Any]]:
        """The model a request runs and its input: a catalogue model and the request's input,
        or, for a workflow, the model of its requirement set and the checked graph."""
        if body.workflow is None:
            template = self.registry.get(str(body.model))
            if is_workflow_model(template):  # its input is a graph: the workflows scope's
                raise UnknownModel(f"unknown model {body.model!r}", details={"model": body.model})
            return template, body.input
        if not principal.may_run_workflows:
            raise ApiError(
                403,
                ErrorCode.FORBIDDEN,
                "this key may not submit workflows (an admin grants the workflows scope)",
                details={"scope": "workflows"},
            )
        if self.workflows is None:
            raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "workflows are not served here")
        # Files the graph brings (core/ASSET references) are checked as the names they get.
        files = await self.inputs.workflow_files(principal, body.workflow)
        checked = await self.workflows.check(
            with_files(body.workflow, files) if files else body.workflow, frozenset(files.values())
        )
        template = await self.workflows.requirement_model(checked.needs)
        outputs = [spec.model_dump(mode="json") for spec in checked.outputs]
        graph = body.workflow if files else checked.graph
        return template, {"workflow": graph, "outputs": outputs}

    async def prepare(
        self,
        principal: Principal,
        body: JobCreate,
        resolved: tuple[ModelTemplate, dict[str, Any]] | None = None,
    ) -> Prepared:
        """Check the lane and the webhook, resolve asset inputs and validate the input."""
        template, given = resolved or await self.model_of(principal, body)
        priority = lane_of(principal, body.priority)
        if template.engine == "pipeline":
            check_pipeline(template, self.registry)
        if body.webhook is not None:
            check_webhook_url(body.webhook.url, Policy.of(self.settings.webhook))
        raw = await self.inputs.resolve(template, principal, given)
        check_prompts(template, raw)
        data = validate_input(template, raw)
        check_prompts(template, data)
        if template.engine == "pipeline":
            check_step_inputs(template, self.registry, data)
        return Prepared(template, body, data, priority)

    @staticmethod
    def submitted(
        principal: Principal,
        prepared: Prepared,
        job_id: str,
        request_id: str | None,
        batch_id: str | None = None,
    ) -> JobEvent:
        """The ``submitted`` event of a prepared request."""
        template, body = prepared.template, prepared.body
        return JobEvent(
            job_id=job_id,
            owner=principal.owner,
            model=template.name,
            kind=EventKind.SUBMITTED,
            status=JobState.QUEUED,
            submission=Submission(
                model=template.name,
                template_version=template.version,
                input=prepared.input,
                webhook=WebhookSpec(url=body.webhook.url, events=list(body.webhook.events))
                if body.webhook
                else None,
                metadata=body.metadata,
                deadline_s=body.deadline_s,
                response_format=body.response_format,
                enhance=template.enhance if body.enhance is None else body.enhance,
                content_tier=principal.content_tier,
                request_id=request_id,
                priority=prepared.priority,
                batch_id=batch_id,
            ),
        )

    async def publish(self, principal: Principal, event: JobEvent, reserved: bool = False) -> None:
        """Take one of the owner's active-job slots (unless ``reserved``) and publish
        ``submitted``.

        The slot is the last check: it is given back if the event is never published. The
        message id ``<job_id>:submitted`` makes a repeated publish a no-op. Work the gateway
        sends itself leaves beside the slot's compare-and-set (see ``Limits.reserve_active``),
        and is deleted from the stream again if the slot is refused after all.
        """
        subject = self.bus.names.job_event(event.owner, event.job_id, EventKind.SUBMITTED.value)
        work = self.work_now(event)
        sent: list[PubAck] = []

        async def send_work() -> None:
            assert work is not None
            sent.append(await self._send_work(event, work))

        if not reserved:
            try:
                beside = send_work if work is not None else None
                await self.limits.reserve_active(principal, beside=beside)
            except BaseException:
                if sent:
                    await self._take_back(sent[0])
                raise
        try:
            if work is None:
                await self.bus.publish(subject, event, msg_id=f"{event.job_id}:submitted")
            else:
                if not sent:
                    await send_work()
                await self._announce_sent(subject, event, sent[0])
        except Exception:
            await self.limits.release_active(principal)
            raise

    def work_now(self, event: JobEvent) -> RunJob | None:
        """The job's work, when the gateway sends it with the submission (see the module): by
        the orchestrator's own rule (``goes_at_once``), from this gateway's view of the fleet
        and of the admins' pauses."""
        sub = event.submission
        if not self.settings.send_work or sub is None or self.fleetwatch is None:
            return None
        if sub.parent is not None:  # a pipeline's step is the orchestrator's to send
            return None
        try:
            template = self.registry.get(sub.model, sub.template_version)
        except (UnknownModel, TemplateError):
            return None
        at_once = goes_at_once(
            template,
            sub.input,
            retry=sub.retry_of is not None,
            paused=self.orders is not None and self.orders.paused(sub.model) is not None,
            served=self.fleetwatch.live(sub.model),
        )
        if not at_once:
            return None
        return work_message(
            template,
            job_id=event.job_id,
            owner=event.owner,
            data=sub.input,
            created_at=event.occurred_at,
            deadline_s=sub.deadline_s,
        )

    async def _send_work(self, event: JobEvent, work: RunJob) -> PubAck:
        assert event.submission is not None
        sub = event.submission
        return await self.bus.publish(
            self.bus.names.work(sub.model, sub.priority), work, msg_id=f"{event.job_id}:run"
        )

    async def _announce_sent(self, subject: str, event: JobEvent, sent: PubAck) -> None:
        """Publish ``submitted`` saying the work was sent (the orchestrator then sends none)."""
        assert event.submission is not None
        sub = event.submission
        said = event.model_copy(update={"submission": sub.model_copy(update={"work_sent": True})})
        try:
            await self.bus.publish(subject, said, msg_id=f"{event.job_id}:submitted")
        except Exception:
            await self._take_back(sent)
            raise

    async def _take_back(self, sent: PubAck) -> None:
        """Delete work the job will not have after all (a worker that took it already runs it;
        its reports find no record and are dropped after a while)."""
        with contextlib.suppress(Exception):
            await self.bus.js.delete_msg(sent.stream, sent.seq)

    # --- idempotency -------------------------------------------------------------------------
    @staticmethod
    def _idem_key(principal: Principal, key: str) -> str:
        if not 1 <= len(key) <= 255 or not key.isprintable():
            raise ApiError(
                400, ErrorCode.VALIDATION_ERROR, "Idempotency-Key must be 1..255 printable chars"
            )
        return f"{principal.owner}.{hashlib.sha256(key.encode()).hexdigest()[:48]}"

    async def _earlier(self, idem_key: str, digest: str) -> IdempotencyRecord | None:
        found = await get_model(self.idempotency, idem_key, IdempotencyRecord)
        if found is None:
            return None
        record = found[0]
        if record.body_sha256 != digest:
            raise ApiError(
                409,
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "this Idempotency-Key was used with a different request body",
                details={"job_id": record.job_id},
            )
        return record

    async def _claim(self, idem_key: str, digest: str, job_id: str) -> bool:
        """Record the key for ``job_id``; False when a concurrent request recorded it first."""
        record = IdempotencyRecord(job_id=job_id, body_sha256=digest, created_at=utcnow())
        try:
            async with nats_errors("recording the idempotency key"):
                await self.idempotency.create(idem_key, record.to_bytes())
            return True
        except KeyWrongLastSequenceError:
            return False

    async def _concurrent(self, idem_key: str, digest: str) -> Submitted:
        """A concurrent request with the same key won: its job, or 409 while it is in flight."""
        earlier = await self._earlier(idem_key, digest)
        record = await self.jobs.find(earlier.job_id) if earlier else None
        if record is None:
            raise in_progress()
        return Submitted(record, replayed=True)

    @property
    def _in_flight(self) -> timedelta:
        """How long a recorded key's request may still be publishing its job (its retries)."""
        return timedelta(seconds=self.bus.settings.publish_retry_s + IN_FLIGHT_MARGIN_S)

    async def _release(self, idem_key: str) -> None:
        try:
            async with nats_errors("releasing the idempotency key"):
                await self.idempotency.delete(idem_key)
        except Exception:
            pass
