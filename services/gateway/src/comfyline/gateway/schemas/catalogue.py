"""Models, fleet status and health, as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from comfyline.contracts import Binding


class Availability(BaseModel):
    """How ready a model is to run right now (from live workers and the work queue)."""

    available: bool = False
    workers: int = 0
    servers: int = 0
    idle_servers: int = 0
    running: int = 0
    queue_depth: int = 0
    paused: bool = Field(default=False, description="an admin paused it: its jobs stay queued")
    reason: str | None = Field(default=None, description="why it cannot run now, if it cannot")
    missing: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per live ComfyUI server: the node classes and model files it lacks for it",
    )


class ProviderPublic(BaseModel):
    """A hosted provider (an API that runs some models), as the provider workers report it."""

    available: bool = Field(description="a provider worker reaches it and it is not backing off")
    workers: int = 0
    models: list[str] = Field(default_factory=list)


class StepTemplatePublic(BaseModel):
    """One step of a pipeline template."""

    name: str
    model: str
    input: dict[str, Any] = Field(
        description='literals, {"input": <pipeline input>} or {"step": <step>, "output": n}'
    )


class ModelLimits(BaseModel):
    """What a model allows."""

    max_queue: int
    queue_deadline_s: float
    run_deadline_s: float
    retry_limit: int
    max_prompt_chars: int | None = None
    prompt_budget_tokens: int | None = None


class ModelPublic(BaseModel):
    """A model of the catalogue."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "object": "model",
                    "name": "cpu-smoke",
                    "version": 1,
                    "kind": "smoke",
                    "title": "CPU smoke test",
                    "description": "A solid-colour PNG of the requested size.",
                    "parameters": {
                        "type": "object",
                        "properties": {"width": {"type": "integer", "minimum": 16}},
                    },
                    "outputs": ["image"],
                    "presets": [],
                    "enhance": False,
                    "cost_per_gpu_second": 0.0,
                    "limits": {
                        "max_queue": 1000,
                        "queue_deadline_s": 300,
                        "run_deadline_s": 60,
                        "retry_limit": 2,
                    },
                    "availability": {"available": True, "workers": 1, "servers": 1},
                }
            ]
        }
    )

    object: Literal["model"] = "model"
    name: str
    version: int
    kind: str
    title: str
    description: str
    parameters: dict[str, Any] = Field(description="JSON Schema of the job input")
    outputs: list[str] = Field(description="output kinds: image, audio, video")
    presets: list[str] = Field(default_factory=list)
    enhance: bool = True
    cost_per_gpu_second: float = 0.0
    limits: ModelLimits
    availability: Availability
    engine: Literal["comfyui", "provider", "pipeline"] = "comfyui"
    provider: str | None = Field(default=None, description="the hosted provider that runs it")
    steps: list[StepTemplatePublic] = Field(default_factory=list, description="a pipeline's")


class ModelList(BaseModel):
    """Every model."""

    object: Literal["list"] = "list"
    data: list[ModelPublic]


class WorkerPublic(BaseModel):
    """A live worker."""

    worker_id: str
    models: list[str]
    servers: int
    busy: int
    started_at: datetime
    version: str


class StatusPublic(BaseModel):
    """The fleet at a glance."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ok",
                    "models": {"cpu-smoke": {"available": True, "workers": 1, "servers": 1}},
                    "queue_depth": 0,
                    "running": 0,
                    "workers": [
                        {
                            "worker_id": "w1",
                            "models": ["cpu-smoke"],
                            "servers": 1,
                            "busy": 0,
                            "started_at": "2026-11-23T12:00:00Z",
                            "version": "0.1.0",
                        }
                    ],
                }
            ]
        }
    )

    status: Literal["ok", "degraded"]
    models: dict[str, Availability]
    queue_depth: int
    running: int
    workers: list[WorkerPublic]
    providers: dict[str, ProviderPublic] = Field(default_factory=dict)


class Health(BaseModel):
    """The process is alive."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Whether the gateway's dependencies answer."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ready", "nats": True, "s3": True}]}
    )

    status: Literal["ready"]
    nats: bool
    s3: bool
    workers: int | None = Field(
        default=None, description="live workers (ComfyUI and provider); None when unknown"
    )
    notes: list[str] = Field(
        default_factory=list,
        description="what this gateway can serve but the fleet cannot run now (no live worker, "
        "models without capacity); readiness stays 200: the gateway itself can serve",
    )


class ModelPublish(BaseModel):
    """A workflow to publish as a catalogue model (admins): the graph, its parameters, and which
    parameter goes to which node input."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "solid-color",
                    "title": "Solid color",
                    "description": "A square of one color.",
                    "kind": "image",
                    "workflow": {
                        "1": {
                            "class_type": "EmptyImage",
                            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
                        },
                        "2": {
                            "class_type": "SaveImage",
                            "inputs": {"images": ["1", 0], "filename_prefix": "color"},
                        },
                    },
                    "parameters": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "color": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": 16777215,
                                "default": 0,
                            }
                        },
                    },
                    "bindings": [{"param": "color", "node": "1", "input": "color"}],
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    kind: Literal["image", "inpaint", "portrait", "tts", "lipsync", "video", "smoke"] = "image"
    workflow: dict[str, dict[str, Any]] = Field(description="an API-format ComfyUI graph")
    parameters: dict[str, Any] = Field(description='JSON Schema, "type": "object"')
    bindings: list[Binding] = Field(default_factory=list)
    cost_per_gpu_second: float = Field(default=0.0, ge=0)
    max_queue: int = Field(default=1000, ge=1)
