"""Jobs, their events, outputs and assets, and prompt enhancement, as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from comfyline.contracts import (
    Cost,
    Enhancement,
    JobError,
    JobState,
    ParentRef,
    Priority,
    Progress,
    StepStatusName,
    WebhookDelivery,
    WebhookSpec,
)

JOB_ID = "job_01kax7r2m0a1b2c3d4e5f6g7h8"
URL = "https://s3.example.com/comfyline/outputs/u1/job_01kax7r2m0a1b2c3d4e5f6g7h8/0.png?X-Amz-..."
WebhookEvent = Literal[
    "submitted",
    "enhanced",
    "dispatched",
    "started",
    "progress",
    "preview",
    "step",
    "retrying",
    "waiting",
    "completed",
    "failed",
    "cancelled",
    "timed_out",
]
TERMINAL_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = (
    "completed",
    "failed",
    "cancelled",
    "timed_out",
)


class Incoming(BaseModel):
    """The base of every request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class WebhookCreate(Incoming):
    """Where to POST the job's events (signed with the owner's webhook secret)."""

    url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://")
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(TERMINAL_WEBHOOK_EVENTS),
        max_length=10,
    )


class JobCreate(Incoming):
    """A job to run: a model and its input."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "cpu-smoke",
                    "input": {"width": 64, "height": 64, "color": 16711680},
                    "metadata": {"order": "42"},
                    "response_format": "url",
                }
            ]
        },
    )

    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="a catalogue model (or give `workflow` instead)",
    )
    workflow: dict[str, Any] | None = Field(
        default=None,
        description="instead of `model`: a ComfyUI API-format graph (node id -> "
        "`{class_type, inputs}`), checked against the live fleet; keys need the `workflows` "
        "scope",
    )
    input: dict[str, Any] = Field(default_factory=dict, description="see the model's parameters")
    webhook: WebhookCreate | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    deadline_s: float | None = Field(default=None, gt=0, le=86400)
    response_format: Literal["url", "b64_json"] = "url"
    enhance: bool | None = Field(default=None, description="None: the model's default")
    priority: Priority | None = Field(
        default=None,
        description="interactive (the default) or batch: batch work never delays interactive "
        "work by more than the job already running; a key may be limited to one lane",
    )

    @model_validator(mode="after")
    def _model_or_workflow(self) -> JobCreate:
        if (self.model is None) == (self.workflow is None):
            raise ValueError("give either model or workflow")
        if self.workflow is not None and self.input:
            raise ValueError("a workflow carries its inputs in its graph; input must be empty")
        return self

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not 1 <= len(key) <= 64 or len(item) > 512:
                raise ValueError("metadata keys are 1..64 chars, values at most 512")
        return value


class Links(BaseModel):
    """Where to go next. ``cancel`` is ``DELETE``; ``events`` carries its own short-lived token."""

    self: str
    events: str
    cancel: str


class OutputPublic(BaseModel):
    """One output, with a link made when it was read."""

    index: int
    kind: str
    content_type: str
    size: int
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    url: str = Field(description="presigned GET link, made at read time")
    url_expires_at: datetime
    content_url: str = Field(description="the gateway route that streams the bytes")
    b64_json: str | None = Field(
        default=None, description="the bytes, for response_format=b64_json"
    )


class PreviewPublic(BaseModel):
    """A preview image made mid-run."""

    content_type: str
    url: str
    url_expires_at: datetime


class StepPublic(BaseModel):
    """One step of a pipeline job: its own job, status, progress, outputs and cost."""

    name: str
    model: str
    job_id: str | None = Field(default=None, description="the step's own job, once submitted")
    status: StepStatusName
    progress: float = Field(description="percent")
    outputs: list[OutputPublic] = Field(default_factory=list)
    cost: Cost = Field(default_factory=Cost)
    error: JobError | None = None


class JobPublic(BaseModel):
    """A job as its owner sees it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "object": "job",
                    "id": JOB_ID,
                    "model": "cpu-smoke",
                    "template_version": 1,
                    "status": "succeeded",
                    "progress": {"percent": 100, "step": 1, "steps": 1},
                    "created_at": "2026-11-23T12:00:00Z",
                    "updated_at": "2026-11-23T12:00:02Z",
                    "started_at": "2026-11-23T12:00:01Z",
                    "finished_at": "2026-11-23T12:00:02Z",
                    "duration_ms": 1000,
                    "attempts": 1,
                    "input": {"width": 64, "height": 64, "color": 16711680, "batch_size": 1},
                    "outputs": [
                        {
                            "index": 0,
                            "kind": "image",
                            "content_type": "image/png",
                            "size": 1234,
                            "width": 64,
                            "height": 64,
                            "url": URL,
                            "url_expires_at": "2026-11-23T12:15:02Z",
                            "content_url": f"https://api.example.com/v1/jobs/{JOB_ID}/outputs/0/content",
                        }
                    ],
                    "cost": {"gpu_seconds": 1.0, "rate_per_gpu_second": 0.0, "amount": 0.0},
                    "links": {
                        "self": f"https://api.example.com/v1/jobs/{JOB_ID}",
                        "events": f"https://api.example.com/v1/jobs/{JOB_ID}/events?token=eyJ...",
                        "cancel": f"https://api.example.com/v1/jobs/{JOB_ID}",
                    },
                }
            ]
        }
    )

    object: Literal["job"] = "job"
    id: str
    model: str
    template_version: int
    status: JobState
    progress: Progress | None = None
    queue_position: int | None = Field(
        default=None, description="while queued: jobs ahead (approx.)"
    )
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    attempts: int = 0
    input: dict[str, Any] = Field(description="as validated: defaults filled in, the seed used")
    metadata: dict[str, str] = Field(default_factory=dict)
    response_format: Literal["url", "b64_json"] = "url"
    enhancement: Enhancement | None = None
    outputs: list[OutputPublic] = Field(default_factory=list)
    error: JobError | None = None
    cost: Cost = Field(default_factory=Cost)
    webhook: WebhookSpec | None = None
    webhook_deliveries: list[WebhookDelivery] = Field(default_factory=list)
    parent: ParentRef | None = Field(default=None, description="on a pipeline's step job")
    steps: list[StepPublic] = Field(
        default_factory=list, description="a pipeline's steps (cost: each step's; total: cost)"
    )
    priority: Priority = "interactive"
    batch_id: str | None = None
    retry_of: str | None = Field(default=None, description="the dead-lettered job this retries")
    replaced_by: str | None = Field(default=None, description="the job that retried this one")
    waiting_reason: str | None = Field(
        default=None, description="while queued: why it is not dispatched yet (model_paused)"
    )
    links: Links


class JobList(BaseModel):
    """A page of jobs, newest first."""

    object: Literal["list"] = "list"
    data: list[JobPublic]
    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for the next page")
    has_more: bool = False


class JobEventPublic(BaseModel):
    """One job event, as SSE ``data`` and inside WebSocket messages."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": JOB_ID,
                    "seq": 42,
                    "event": "progress",
                    "kind": "progress",
                    "status": "running",
                    "occurred_at": "2026-11-23T12:00:01Z",
                    "attempt": 1,
                    "progress": {"percent": 50, "step": 10, "steps": 20},
                }
            ]
        }
    )

    job_id: str
    seq: int = Field(description="the JOBS stream sequence (the SSE id)")
    event: str = Field(description="the SSE event type")
    kind: str
    status: JobState
    occurred_at: datetime
    model: str
    attempt: int = 0
    progress: Progress | None = None
    preview: PreviewPublic | None = None
    outputs: list[OutputPublic] = Field(default_factory=list)
    error: JobError | None = None
    retry_in_s: float | None = Field(
        default=None, description="retrying: seconds until the next attempt may start"
    )
    waiting_reason: str | None = Field(
        default=None, description="waiting and retrying: what the job waits for, and why"
    )
    queue_position: int | None = None
    enhancement: Enhancement | None = None
    parent: ParentRef | None = None
    step: StepPublic | None = Field(default=None, description="on step_update: the step")
    steps: list[StepPublic] = Field(
        default_factory=list, description="a pipeline's steps (on step_update and its end)"
    )


class WsMessage(BaseModel):
    """A WebSocket message: ``job_update``, ``step_update``, ``job_completed``, ``job_failed``."""

    type: str
    event: str
    seq: int
    job_id: str
    data: JobEventPublic
