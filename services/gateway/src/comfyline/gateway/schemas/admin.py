"""What admins send and read: workers, drains, model pauses, dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from comfyline.contracts import JobError, ModelPause, ServerStatus, WorkerHeartbeat

_T = "2026-11-23T12:00:00Z"


class ServerAdmin(BaseModel):
    """One ComfyUI server of a worker."""

    url: str
    healthy: bool
    busy: bool
    job_id: str | None = Field(default=None, description="the job running there")
    waiting: list[str] = Field(
        default_factory=list, description="jobs already queued there, next after job_id"
    )
    gpu: str | None = None
    vram_total: int | None = None
    models: list[str] = Field(default_factory=list)
    loaded: list[str] = Field(
        default_factory=list, description="model files loaded by the last job run there"
    )
    last_model: str | None = None

    @classmethod
    def of(cls, server: ServerStatus) -> ServerAdmin:
        return cls.model_validate(server.model_dump())


class WorkerAdmin(BaseModel):
    """A live worker as an operator sees it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "gpu-box-1",
                    "state": "busy",
                    "draining": False,
                    "drain_requested": False,
                    "models": ["txt2img-sdxl"],
                    "loaded": ["sd_xl_base_1.0.safetensors"],
                    "current_jobs": ["job_01kax7r2m0a1b2c3d4e5f6g7h8"],
                    "servers": [
                        {
                            "url": "http://10.0.0.5:8188",
                            "healthy": True,
                            "busy": True,
                            "job_id": "job_01kax7r2m0a1b2c3d4e5f6g7h8",
                            "models": ["txt2img-sdxl"],
                            "loaded": ["sd_xl_base_1.0.safetensors"],
                            "last_model": "txt2img-sdxl",
                        }
                    ],
                    "last_heartbeat": _T,
                    "started_at": _T,
                    "version": "0.1.0",
                    "jobs_done": 41,
                    "jobs_failed": 1,
                }
            ]
        }
    )

    id: str
    state: Literal["idle", "busy", "draining", "drained", "down"] = Field(
        description="busy: some server runs a job; drained: draining and nothing left running; "
        "down: no server healthy"
    )
    draining: bool = Field(description="the worker says it takes no more work")
    drain_requested: bool = Field(description="an admin asked it to drain (it may not know yet)")
    drain_reason: str | None = None
    models: list[str]
    loaded: list[str] = Field(description="model files loaded on any of its servers")
    current_jobs: list[str]
    servers: list[ServerAdmin]
    last_heartbeat: datetime
    started_at: datetime
    version: str
    jobs_done: int
    jobs_failed: int

    @classmethod
    def of(cls, beat: WorkerHeartbeat, drain_reason: str | None) -> WorkerAdmin:
        busy = any(s.busy for s in beat.servers)
        state: Literal["idle", "busy", "draining", "drained", "down"]
        if beat.draining:
            state = "draining" if busy else "drained"
        elif not any(s.healthy for s in beat.servers):
            state = "down"
        else:
            state = "busy" if busy else "idle"
        return cls(
            id=beat.worker_id,
            state=state,
            draining=beat.draining,
            drain_requested=drain_reason is not None,
            drain_reason=drain_reason or None,
            models=beat.models,
            loaded=sorted({f for s in beat.servers for f in s.loaded}),
            current_jobs=[
                job for s in beat.servers for job in ([s.job_id] if s.job_id else []) + s.waiting
            ],
            servers=[ServerAdmin.of(s) for s in beat.servers],
            last_heartbeat=beat.occurred_at,
            started_at=beat.started_at,
            version=beat.version,
            jobs_done=beat.jobs_done,
            jobs_failed=beat.jobs_failed,
        )


class WorkerList(BaseModel):
    """Every live worker."""

    object: Literal["list"] = "list"
    data: list[WorkerAdmin]


class OrderCreate(BaseModel):
    """Why an operator drains a worker or pauses a model (shown to other admins and on jobs)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "driver update"}]}
    )

    reason: str = Field(default="", max_length=200)


class ModelPausePublic(BaseModel):
    """Whether a model is paused, and why."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "txt2img-sdxl",
                    "paused": True,
                    "reason": "new checkpoint",
                    "paused_at": _T,
                    "paused_by": "ops",
                }
            ]
        }
    )

    model: str
    paused: bool
    reason: str | None = None
    paused_at: datetime | None = None
    paused_by: str | None = None

    @classmethod
    def of(cls, model: str, pause: ModelPause | None) -> ModelPausePublic:
        if pause is None:
            return cls(model=model, paused=False)
        return cls(
            model=model,
            paused=True,
            reason=pause.reason,
            paused_at=pause.paused_at,
            paused_by=pause.paused_by,
        )


class DeadLetterPublic(BaseModel):
    """A job that ran out of deliveries; its id is the job's id."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "job_01kax7r2m0a1b2c3d4e5f6g7h8",
                    "job_id": "job_01kax7r2m0a1b2c3d4e5f6g7h8",
                    "model": "txt2img-sdxl",
                    "owner": "alice",
                    "deliveries": 3,
                    "reason": "3 deliveries to work-txt2img-sdxl without success",
                    "dead_lettered_at": _T,
                    "error": {"code": "max_attempts_exceeded", "message": "gave up after 3"},
                    "replaced_by": None,
                }
            ]
        }
    )

    id: str
    job_id: str
    model: str
    owner: str | None = None
    deliveries: int
    reason: str
    dead_lettered_at: datetime
    error: JobError | None = None
    replaced_by: str | None = Field(default=None, description="the job that retried it")


class DeadLetterList(BaseModel):
    """Dead letters, newest first."""

    object: Literal["list"] = "list"
    data: list[DeadLetterPublic]
