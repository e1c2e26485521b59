"""The pieces a job is made of: its input and output references, progress, errors, cost."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from .errors import ErrorCode
from .wire import WireModel

Priority = Literal["interactive", "batch"]
"""A job's lane: ``interactive`` (the default) is always served before ``batch``."""
LANES: tuple[Priority, ...] = ("interactive", "batch")
"""The lanes in the order workers serve them."""


class OutputKind(StrEnum):
    """What a job output is."""

    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"


class OutputRef(WireModel):
    """One stored output of a job (``outputs/<owner>/<job_id>/<n>.<ext>``)."""

    index: int = Field(ge=0)
    key: str = Field(description="object key in the outputs bucket")
    kind: OutputKind
    content_type: str
    size: int = Field(ge=0, description="bytes")
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    node_id: str | None = Field(default=None, description="the ComfyUI node that made it")
    filename: str | None = Field(default=None, description="ComfyUI's file name")
    hash: str | None = Field(default=None, description="blake3:<hex> of the bytes stored")
    fresh_until: datetime | None = Field(
        default=None,
        description="until when the output is also kept in JetStream's OUTPUTS stream, where "
        "the gateway serves it from (S3 has it within moments of the job's end, and after)",
    )


class Progress(WireModel):
    """How far a run is: overall percent, plus the node and step ComfyUI reports."""

    percent: float = Field(ge=0, le=100)
    node_id: str | None = None
    node_type: str | None = None
    step: int | None = None
    steps: int | None = None
    nodes_done: int | None = None
    nodes_total: int | None = None


class PreviewRef(WireModel):
    """A preview image made mid-run (stored like an output, but temporary)."""

    key: str
    content_type: str
    node_id: str | None = None


class JobError(WireModel):
    """Why a job failed, in terms a user can act on."""

    code: ErrorCode
    message: str
    node_id: str | None = None
    node_type: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    retryable: bool = False


class WebhookSpec(WireModel):
    """Where to send a job's events, and which ones."""

    url: str
    events: list[str] = Field(
        default_factory=lambda: ["completed", "failed", "cancelled", "timed_out"],
        description="event kinds to send: submitted, started, progress, completed, ...",
    )


class WebhookDelivery(WireModel):
    """One attempt to deliver one webhook event."""

    webhook_id: str
    event: str
    attempt: int
    at: datetime
    status_code: int | None = None
    ok: bool
    error: str | None = None


class Enhancement(WireModel):
    """What the prompt-enhancer did to a job's prompt (kept on the job record)."""

    original_prompt: str
    prompt: str
    negative_prompt: str | None = None
    strategy: str
    tokenizer: str
    tokens_before: int
    tokens_after: int
    budget: int
    expansion_pct: float
    compressed: bool
    dropped: list[str] = Field(default_factory=list)
    llm_model: str | None = None
    fallback_reason: str | None = Field(
        default=None, description="why the original prompt was kept (timeout, error, off)"
    )


class Cost(WireModel):
    """What a job cost: GPU seconds over all attempts times the model's rate."""

    gpu_seconds: float = 0.0
    rate_per_gpu_second: float = 0.0
    amount: float = 0.0
    currency: Literal["USD"] = "USD"


class Attempt(WireModel):
    """One delivery of a job to a worker."""

    number: int
    worker_id: str | None = None
    server: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    gpu_seconds: float = 0.0
    outcome: str | None = None


StepStatusName = Literal[
    "pending", "queued", "running", "succeeded", "failed", "cancelled", "timed_out", "skipped"
]


class ParentRef(WireModel):
    """The pipeline a child job runs a step of."""

    job_id: str
    step: str


class StepState(WireModel):
    """One step of a pipeline job, as the pipeline's record keeps it."""

    name: str
    model: str
    job_id: str | None = Field(default=None, description="the child job, once submitted")
    status: StepStatusName = "pending"
    progress: float = Field(default=0.0, ge=0, le=100, description="percent")
    weight: float = Field(default=1.0, gt=0, description="the step's expected seconds")
    outputs: list[OutputRef] = Field(default_factory=list)
    cost: Cost = Field(default_factory=Cost)
    error: JobError | None = None
