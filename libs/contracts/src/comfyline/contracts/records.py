"""Records kept in KV buckets: jobs (written only by the orchestrator), idempotency, keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from .events import JobEvent, Submission
from .jobs import (
    Attempt,
    Cost,
    Enhancement,
    JobError,
    OutputRef,
    ParentRef,
    Priority,
    Progress,
    StepState,
    WebhookDelivery,
    WebhookSpec,
)
from .prompts import Tier
from .states import EventKind, JobState
from .subjects import token
from .wire import WireModel


class JobRecord(WireModel):
    """The job as it is now: key ``<job_id>`` in the ``jobs`` bucket.

    Only the orchestrator writes it, always with compare-and-set on the KV revision, and only
    through the transition table; ``JOBS`` then says what this record says.
    """

    id: str
    owner: str
    model: str
    template_version: int
    status: JobState
    created_at: datetime
    updated_at: datetime
    input: dict[str, Any]
    metadata: dict[str, str] = Field(default_factory=dict)
    webhook: WebhookSpec | None = None
    response_format: Literal["url", "b64_json"] = "url"
    enhance: bool = True
    content_tier: Tier = "general"
    deadline_s: float | None = None
    queue_deadline_at: datetime | None = None
    run_deadline_at: datetime | None = None
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress | None = None
    attempts: int = 0
    attempt_log: list[Attempt] = Field(default_factory=list)
    enhancement: Enhancement | None = None
    outputs: list[OutputRef] = Field(default_factory=list)
    error: JobError | None = None
    cost: Cost = Field(default_factory=Cost)
    webhook_deliveries: list[WebhookDelivery] = Field(default_factory=list)
    last_event: EventKind = EventKind.SUBMITTED
    cancel_requested: bool = False
    request_id: str | None = None
    parent: ParentRef | None = Field(default=None, description="set on a pipeline's step job")
    steps: list[StepState] = Field(default_factory=list, description="a pipeline's steps")
    priority: Priority = "interactive"
    batch_id: str | None = None
    retry_of: str | None = Field(default=None, description="the job this one retries")
    replaced_by: str | None = Field(default=None, description="the job that retries this one")
    waiting_reason: str | None = Field(
        default=None, description="why a queued job is not dispatched yet (model_paused: ...)"
    )

    @classmethod
    def from_submitted(cls, event: JobEvent, updated_at: datetime | None = None) -> JobRecord:
        """The ``queued`` record that a ``submitted`` event implies (its first version)."""
        sub = event.submission
        if sub is None:
            raise ValueError(f"event {event.kind} of {event.job_id} carries no submission")
        return cls(
            id=event.job_id,
            owner=event.owner,
            model=sub.model,
            template_version=sub.template_version,
            status=JobState.QUEUED,
            created_at=event.occurred_at,
            updated_at=updated_at or event.occurred_at,
            input=sub.input,
            metadata=sub.metadata,
            webhook=sub.webhook,
            response_format=sub.response_format,
            enhance=sub.enhance,
            content_tier=sub.content_tier,
            deadline_s=sub.deadline_s,
            request_id=sub.request_id,
            parent=sub.parent,
            priority=sub.priority,
            batch_id=sub.batch_id,
            retry_of=sub.retry_of,
        )

    def resubmission(self, request_id: str | None = None) -> Submission:
        """What was asked for this job, to submit it again as a new job that retries it."""
        return Submission(
            model=self.model,
            template_version=self.template_version,
            input=self.input,
            webhook=self.webhook,
            metadata=self.metadata,
            deadline_s=self.deadline_s,
            response_format=self.response_format,
            enhance=self.enhance,
            content_tier=self.content_tier,
            request_id=request_id,
            priority=self.priority,
            batch_id=self.batch_id,
            retry_of=self.id,
        )

    @property
    def duration_ms(self) -> int | None:
        """Run time from start to finish, once finished."""
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds() * 1000)
        return None


class IdempotencyRecord(WireModel):
    """``Idempotency-Key`` -> the job it made (bucket ``idempotency``, key: owner + key digest)."""

    job_id: str
    body_sha256: str
    created_at: datetime


class ApiKeyRecord(WireModel):
    """An API key (bucket ``keys``, key: the SHA-256 hex digest of the secret)."""

    key_id: str
    owner: str
    role: Literal["user", "admin"] = "user"
    name: str = ""
    created_at: datetime
    revoked_at: datetime | None = None
    content_tier: Tier = "general"
    limits: dict[str, float] = Field(
        default_factory=dict, description="overrides: submit_per_min, active_jobs, ..."
    )
    lane: Priority | None = Field(
        default=None, description="the only priority this key may submit at (None: any)"
    )
    scopes: list[Literal["workflows"]] = Field(
        default_factory=list,
        description="extra rights an admin granted: workflows (submit any ComfyUI graph)",
    )


class UsageRecord(WireModel):
    """One owner's use of one model on one day (bucket ``usage``, key ``<owner>.<model>.<day>``)."""

    owner: str
    model: str
    day: str = Field(description="YYYY-MM-DD, UTC")
    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    gpu_seconds: float = 0.0
    cost: float = 0.0
    applied_seq: int = Field(
        default=0, description="the last JOBS sequence counted here (so none is counted twice)"
    )


def active_jobs_key(owner: str) -> str:
    """The ``usage`` bucket key of the count of an owner's jobs the gateways accepted."""
    return f"active.{token(owner)}"


def ended_jobs_key(owner: str) -> str:
    """The ``usage`` bucket key of the count of an owner's accepted jobs that ended."""
    return f"ended.{token(owner)}"


class ActiveJobs(WireModel):
    """How many jobs the gateways accepted for an owner (bucket ``usage``, key
    ``active.<owner>``): one more per accepted job (compare-and-set, refused at the owner's
    cap), one less for a job that was never published. The owner's jobs that have not ended are
    this count less :class:`EndedJobs`' (see :func:`jobs_not_ended`).

    Gateways and the orchestrator each write a count of their own, so neither's write makes the
    other's next compare-and-set fail: each writes against the revision it wrote last, with no
    read first.
    """

    owner: str
    count: int = Field(default=0, ge=0)
    terminal_seq: int = Field(
        default=0,
        description="in a count written before EndedJobs existed (when this count was also "
        "lowered per ended job): the last terminal event it counted; EndedJobs starts from it",
    )


class EndedJobs(WireModel):
    """How many of an owner's accepted jobs ended (bucket ``usage``, key ``ended.<owner>``):
    the orchestrator adds one per terminal event on ``JOBS``, in stream order, remembering the
    last one it counted so a redelivered event is not counted twice."""

    owner: str
    count: int = Field(default=0, ge=0)
    terminal_seq: int = 0


def jobs_not_ended(active: ActiveJobs | None, ended: EndedJobs | None) -> int:
    """An owner's jobs that have not ended: accepted less ended (never below zero)."""
    return max(0, (active.count if active else 0) - (ended.count if ended else 0))


def webhook_secret_key(owner: str) -> str:
    """The ``keys`` bucket key of an owner's webhook signing secret (``owner`` is its token)."""
    return f"webhook.{token(owner)}"


class WebhookSecret(WireModel):
    """An owner's webhook signing secret (``whsec_...``), in the ``keys`` bucket.

    The gateway writes it (shown once, rotatable); the orchestrator reads it to sign webhooks.
    """

    owner: str
    secret: str
    created_at: datetime


class BatchRecord(WireModel):
    """A batch of jobs submitted together (bucket ``batches``, key ``<batch_id>``).

    The gateway writes it once, before any of its jobs is published, and again (compare-and-set)
    only to mark it cancelled or some jobs lost; the jobs themselves carry ``batch_id`` and live
    in ``jobs`` like any other.
    """

    id: str
    owner: str
    job_ids: list[str]
    priority: Priority = "batch"
    created_at: datetime
    metadata: dict[str, str] = Field(default_factory=dict)
    cancelled_at: datetime | None = None
    lost: list[str] = Field(
        default_factory=list,
        description="job ids never published (the gateway died while submitting the batch)",
    )


JobEvent.model_rebuild(_types_namespace={"JobRecord": JobRecord})
