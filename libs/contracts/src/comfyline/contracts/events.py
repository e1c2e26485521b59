"""Messages on the streams and subjects: job events, run events, work, control, heartbeats."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .jobs import (
    Enhancement,
    JobError,
    OutputRef,
    ParentRef,
    PreviewRef,
    Priority,
    Progress,
    StepState,
    WebhookSpec,
)
from .prompts import Tier
from .states import EventKind, JobState
from .wire import Message, WireModel

if TYPE_CHECKING:  # records.py imports this module; it completes JobEvent once JobRecord exists
    from .records import JobRecord


class Submission(WireModel):
    """What a client asked for, as the gateway validated it (carried by ``submitted``)."""

    model: str
    template_version: int
    input: dict[str, Any] = Field(description="validated input, defaults filled in, seed chosen")
    webhook: WebhookSpec | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    deadline_s: float | None = Field(default=None, description="client's run deadline, seconds")
    response_format: Literal["url", "b64_json"] = "url"
    enhance: bool = True
    content_tier: Tier = Field(default="general", description="the owner's allowed tier")
    request_id: str | None = None
    parent: ParentRef | None = Field(default=None, description="set on a pipeline's step job")
    priority: Priority = "interactive"
    batch_id: str | None = Field(default=None, description="the batch the job belongs to")
    retry_of: str | None = Field(default=None, description="the dead-lettered job this retries")
    work_sent: bool = Field(
        default=False,
        description="the gateway sent the job's work (message id <job_id>:run) with this "
        "submission: a plain job with nothing to screen, for a model a live worker serves and "
        "no admin paused. Its record starts dispatched",
    )


class JobEvent(Message):
    """One event on ``jobs.<owner>.<job_id>.<kind>`` (stream ``JOBS``).

    The gateway writes ``submitted``; the orchestrator writes every later kind, each only after
    the job record says so. ``status`` is the job's state once this event is applied.
    """

    job_id: str
    owner: str
    model: str
    kind: EventKind
    status: JobState
    attempt: int = 0
    submission: Submission | None = None
    enhancement: Enhancement | None = None
    progress: Progress | None = None
    preview: PreviewRef | None = None
    outputs: list[OutputRef] = Field(default_factory=list)
    error: JobError | None = None
    retry_in_s: float | None = Field(
        default=None, ge=0, description="for retrying: seconds until the next attempt may start"
    )
    waiting_reason: str | None = Field(
        default=None, description="for waiting and retrying: what the job waits for, and why"
    )
    queue_position: int | None = None
    parent: ParentRef | None = Field(default=None, description="set on a pipeline's step job")
    step: StepState | None = Field(default=None, description="for step: the step that changed")
    steps: list[StepState] = Field(
        default_factory=list, description="a pipeline's steps (on step and terminal events)"
    )
    record: JobRecord | None = Field(
        default=None,
        description="on terminal events: the job's record as written when it ended, so a "
        "waiting answer needs no read of the jobs bucket",
    )


class RunJob(Message):
    """Work on ``work.<model>`` (stream ``WORK``): what a worker needs to run one job."""

    job_id: str
    owner: str
    model: str
    template_version: int
    input: dict[str, Any] = Field(description="validated input with the final (enhanced) prompt")
    deadline_at: datetime | None = None
    output_prefix: str = Field(description="object key prefix for outputs, ends with '/'")


RunEventKind = Literal["started", "progress", "preview", "completed", "failed", "cancelled"]


class RunEvent(Message):
    """A worker's report on ``runs.<job_id>.<kind>`` (stream ``RUNS``), read by the orchestrator."""

    job_id: str
    kind: RunEventKind
    attempt: int = Field(ge=1, description="the WORK message's delivery count")
    worker_id: str
    server: str | None = None
    prompt_id: str | None = None
    progress: Progress | None = None
    preview: PreviewRef | None = None
    outputs: list[OutputRef] = Field(default_factory=list)
    error: JobError | None = None
    gpu_seconds: float | None = Field(default=None, description="ComfyUI execution time")
    final: bool = Field(
        default=True, description="for failed: False when the worker will retry (nak)"
    )
    retry_in_s: float | None = Field(
        default=None, ge=0, description="for failed with final=False: the delay before the retry"
    )
    started_at: datetime | None = Field(
        default=None,
        description="for started, and for a completed with no started before it (a run that "
        "ends within the worker's started delay reports its start with its end): when ComfyUI "
        "started the attempt",
    )


class CancelCommand(Message):
    """``control.cancel.<job_id>``: stop this job wherever it is."""

    job_id: str
    reason: str = "cancelled by owner"


class CancelRequest(Message):
    """The gateway asks the orchestrator, the one writer of job state, to cancel a job."""

    job_id: str
    owner: str = Field(description="the caller's owner token ('*' for an admin)")
    reason: str = "cancelled by owner"


class CancelReply(Message):
    """The job's state after the request; ``code`` says why it was refused."""

    ok: bool
    status: JobState | None = None
    code: str | None = None
    error: str | None = None


class Timer(Message):
    """A durable timer on ``timers.<kind>.<job_id>``, acted on once ``due_at`` passes."""

    job_id: str
    kind: Literal["queue_deadline", "run_deadline", "webhook"]
    due_at: datetime
    payload: dict[str, Any] = Field(default_factory=dict)


class DeadLetter(Message):
    """Work that exhausted its deliveries, on ``deadletter.<model>``."""

    job_id: str
    model: str
    deliveries: int
    stream_seq: int | None = None
    reason: str


class ServerStatus(WireModel):
    """One ComfyUI server as a worker sees it."""

    url: str
    healthy: bool
    busy: bool
    job_id: str | None = Field(default=None, description="the job of ours executing now")
    waiting: list[str] = Field(
        default_factory=list,
        description="jobs of ours already in the server's own queue, next after job_id",
    )
    gpu: str | None = None
    vram_total: int | None = None
    provider: str | None = Field(default=None, description="a hosted provider's name")
    models: list[str] = Field(default_factory=list)
    loaded: list[str] = Field(
        default_factory=list,
        description="model files (checkpoints, ...) loaded by the last job run here",
    )
    object_info: str | None = Field(
        default=None, description="storage key of the server's /object_info (content-addressed)"
    )
    last_model: str | None = Field(default=None, description="the model of the last job run")
    missing: dict[str, list[str]] = Field(
        default_factory=dict,
        description="catalogue models this server cannot run, each with the node classes and "
        "model files it lacks (from its /object_info)",
    )


class WorkerHeartbeat(Message):
    """A worker's entry in the ``workers`` bucket (a TTL makes a dead worker disappear)."""

    worker_id: str
    models: list[str]
    servers: list[ServerStatus]
    started_at: datetime
    version: str = "0.1.0"
    draining: bool = Field(default=False, description="finishing its jobs, taking no more")
    jobs_done: int = 0
    jobs_failed: int = 0
