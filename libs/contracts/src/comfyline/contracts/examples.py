"""One example of every message, for the contract tests, the JSON Schemas and the docs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .errors import ErrorCode
from .events import (
    CancelCommand,
    CancelReply,
    CancelRequest,
    DeadLetter,
    JobEvent,
    RunEvent,
    RunJob,
    ServerStatus,
    Submission,
    Timer,
    WorkerHeartbeat,
)
from .fleet import ModelPause, WorkerDrain, WorkerEvent
from .jobs import (
    Cost,
    Enhancement,
    JobError,
    OutputKind,
    OutputRef,
    ParentRef,
    Progress,
    StepState,
    WebhookSpec,
)
from .prompts import EnhanceReply, EnhanceRequest, PolicyReply, PolicyRequest
from .records import (
    ActiveJobs,
    ApiKeyRecord,
    BatchRecord,
    EndedJobs,
    IdempotencyRecord,
    JobRecord,
    UsageRecord,
    WebhookSecret,
)
from .states import EventKind, JobState
from .wire import WireModel

_T = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
_JOB = "job_01kax7r2m0a1b2c3d4e5f6g7h8"
_OUT = OutputRef(
    index=0,
    key=f"outputs/u1/{_JOB}/0.png",
    kind=OutputKind.IMAGE,
    content_type="image/png",
    size=1234,
    width=64,
    height=64,
    node_id="2",
    filename="cpu_smoke_00001_.png",
)
_ENH = Enhancement(
    original_prompt="a red fox",
    prompt="a red fox, highly detailed",
    strategy="rules",
    tokenizer="clip",
    tokens_before=3,
    tokens_after=6,
    budget=75,
    expansion_pct=100.0,
    compressed=False,
)
_SUB = Submission(
    model="cpu-smoke",
    template_version=1,
    input={"width": 64, "height": 64, "color": 16711680},
    webhook=WebhookSpec(url="https://example.com/hook"),
)

_STEP = StepState(
    name="image",
    model="txt2img-sdxl",
    job_id="job_01kax7r2m0x9y8z7w6v5t4s3r2",
    status="succeeded",
    progress=100,
    weight=120,
    outputs=[_OUT],
    cost=Cost(gpu_seconds=2.0, rate_per_gpu_second=0.0006, amount=0.0012),
)
_PARENT = ParentRef(job_id=_JOB, step="image")


def examples() -> list[WireModel]:
    """Every message and record type, filled in."""
    return [
        JobEvent(
            job_id=_JOB,
            owner="u1",
            model="cpu-smoke",
            kind=EventKind.SUBMITTED,
            status=JobState.QUEUED,
            submission=_SUB,
            occurred_at=_T,
        ),
        JobEvent(
            job_id=_JOB,
            owner="u1",
            model="cpu-smoke",
            kind=EventKind.COMPLETED,
            status=JobState.SUCCEEDED,
            attempt=1,
            outputs=[_OUT],
            enhancement=_ENH,
            progress=Progress(percent=100, node_id="2", step=1, steps=1),
            occurred_at=_T,
        ),
        JobEvent(
            job_id=_JOB,
            owner="u1",
            model="image-to-clip",
            kind=EventKind.STEP,
            status=JobState.RUNNING,
            progress=Progress(percent=40, nodes_done=1, nodes_total=2),
            step=_STEP,
            steps=[_STEP, StepState(name="clip", model="img2vid-wan", weight=60)],
            occurred_at=_T,
        ),
        JobEvent(
            job_id="job_01kax7r2m0x9y8z7w6v5t4s3r2",
            owner="u1",
            model="txt2img-sdxl",
            kind=EventKind.STARTED,
            status=JobState.RUNNING,
            attempt=1,
            parent=_PARENT,
            occurred_at=_T,
        ),
        RunJob(
            job_id=_JOB,
            owner="u1",
            model="cpu-smoke",
            template_version=1,
            input={"width": 64},
            deadline_at=_T,
            output_prefix=f"outputs/u1/{_JOB}/",
        ),
        RunEvent(
            job_id=_JOB,
            kind="failed",
            attempt=2,
            worker_id="w1",
            server="http://127.0.0.1:8188",
            prompt_id="4bca0267-a059-47cb-84b4-cf2c497ea645",
            error=JobError(code=ErrorCode.COMFY_EXECUTION_ERROR, message="boom", node_id="3"),
            final=False,
        ),
        CancelCommand(job_id=_JOB),
        CancelRequest(job_id=_JOB, owner="u1"),
        CancelReply(ok=False, status=JobState.SUCCEEDED, code="job_already_terminal"),
        Timer(job_id=_JOB, kind="run_deadline", due_at=_T, payload={"attempt": 1}),
        DeadLetter(job_id=_JOB, model="cpu-smoke", deliveries=3, reason="max deliveries"),
        WorkerHeartbeat(
            worker_id="w1",
            models=["cpu-smoke"],
            servers=[
                ServerStatus(
                    url="http://127.0.0.1:8188",
                    healthy=True,
                    busy=False,
                    loaded=["sd_xl_base_1.0.safetensors"],
                    last_model="txt2img-sdxl",
                )
            ],
            started_at=_T,
            jobs_done=12,
            jobs_failed=1,
        ),
        WorkerHeartbeat(
            worker_id="provider-1",
            models=["dalle3"],
            servers=[
                ServerStatus(
                    url="https://images.example.com/v1",
                    healthy=True,
                    busy=False,
                    models=["dalle3"],
                    provider="openai",
                )
            ],
            started_at=_T,
        ),
        EnhanceRequest(model="txt2img-sdxl", prompt="a red fox", quality="fast"),
        EnhanceReply(enhancement=_ENH),
        PolicyRequest(model="txt2img-sdxl", texts=["a red fox"], allowed="general"),
        PolicyReply(tier="general", allowed=True),
        JobRecord(
            id=_JOB,
            owner="u1",
            model="cpu-smoke",
            template_version=1,
            status=JobState.SUCCEEDED,
            created_at=_T,
            updated_at=_T,
            input={"width": 64},
            outputs=[_OUT],
            enhancement=_ENH,
        ),
        IdempotencyRecord(job_id=_JOB, body_sha256="ab" * 32, created_at=_T),
        ApiKeyRecord(key_id="key_1", owner="u1", created_at=_T),
        UsageRecord(owner="u1", model="cpu-smoke", day="2026-11-23", jobs=1, succeeded=1),
        WebhookSecret(owner="u1", secret="whsec_" + "A" * 32, created_at=_T),
        ActiveJobs(owner="u1", count=5),
        EndedJobs(owner="u1", count=3, terminal_seq=41),
        BatchRecord(id="bat_1", owner="u1", job_ids=[_JOB], created_at=_T),
        WorkerDrain(worker_id="w1", reason="driver update", requested_at=_T, requested_by="ops"),
        ModelPause(model="cpu-smoke", reason="new checkpoint", paused_at=_T, paused_by="ops"),
        WorkerEvent(
            kind="server_down", worker_id="w1", server="http://127.0.0.1:8188", occurred_at=_T
        ),
    ]


def example_json() -> dict[str, dict[str, Any]]:
    """The examples as JSON-ready dicts, keyed by type name (the last one of a type wins)."""
    return {type(m).__name__: m.model_dump(mode="json", exclude_none=True) for m in examples()}
