"""The contract as documents: a JSON Schema per message and an AsyncAPI document of the subjects.

So a worker written in another language can join: it reads these, not our Python.
``python -m comfyline.contracts --out DIR`` writes them.
"""

from __future__ import annotations

from typing import Any

from .events import (
    CancelCommand,
    CancelReply,
    CancelRequest,
    DeadLetter,
    JobEvent,
    RunEvent,
    RunJob,
    Timer,
    WorkerHeartbeat,
)
from .fleet import ModelPause, WorkerDrain, WorkerEvent
from .prompts import EnhanceReply, EnhanceRequest, ErrorReply, PolicyReply, PolicyRequest
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
from .subjects import Names
from .templates import ModelTemplate
from .wire import SCHEMA_VERSION, WireModel

MESSAGES: tuple[type[WireModel], ...] = (
    JobEvent,
    RunJob,
    RunEvent,
    CancelCommand,
    CancelRequest,
    CancelReply,
    Timer,
    DeadLetter,
    WorkerHeartbeat,
    EnhanceRequest,
    EnhanceReply,
    PolicyRequest,
    PolicyReply,
    ErrorReply,
    JobRecord,
    IdempotencyRecord,
    ApiKeyRecord,
    UsageRecord,
    WebhookSecret,
    ActiveJobs,
    EndedJobs,
    BatchRecord,
    WorkerDrain,
    ModelPause,
    WorkerEvent,
    ModelTemplate,
)


def json_schemas() -> dict[str, dict[str, Any]]:
    """A JSON Schema (draft 2020-12) for every message and record, by type name."""
    return {model.__name__: model.model_json_schema(mode="serialization") for model in MESSAGES}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/messages/{name}"}


def asyncapi(names: Names | None = None) -> dict[str, Any]:
    """An AsyncAPI 3.0 document: every channel, who sends on it, and its message."""
    n = names or Names()
    channels: dict[str, tuple[str, str, str]] = {
        # channel id: (address, message, description)
        "jobEvents": (
            "jobs.{owner}.{job_id}.{kind}",
            "JobEvent",
            "Stream JOBS. The gateway writes `submitted`, the orchestrator every later kind.",
        ),
        "stepEvents": (
            "steps.{parent_id}.{job_id}.{kind}",
            "JobEvent",
            "Stream JOBS. A pipeline step's started, progress and terminal events again, from "
            "the orchestrator to its pipelines consumer (no other job's events are here).",
        ),
        "runEvents": (
            "runs.{job_id}.{kind}",
            "RunEvent",
            "Stream RUNS. Workers report runs; only the orchestrator reads.",
        ),
        "work": ("work.{model}", "RunJob", "Stream WORK (work queue); durable `work-<model>`."),
        "timers": ("timers.{kind}.{job_id}", "Timer", "Stream TIMERS: durable timers."),
        "deadLetters": ("deadletter.{model}", "DeadLetter", "Work past its retry limit."),
        "cancel": ("control.cancel.{job_id}", "CancelCommand", "Core NATS: stop this job."),
        "workerHeartbeats": (
            "$KV.workers.{worker_id}",
            "WorkerHeartbeat",
            "KV bucket `workers` (TTL): a worker's entry, refreshed every few seconds while it "
            "serves; a model counts as available while a live entry lists it with a healthy "
            "server. A worker joins by: binding durable `work-<model>` on WORK, writing this "
            "entry, reporting RunEvents on runs.<job_id>.<kind> (message id "
            "`<job_id>:<attempt>:<kind>`), storing outputs under RunJob.output_prefix, acking "
            "after the final event, and stopping a job on control.cancel.<job_id>.",
        ),
        "cancelRequest": (
            n.cancel_request(),
            "CancelRequest",
            "Request/reply to the orchestrator; answered with CancelReply.",
        ),
        "enhance": (n.enhance(), "EnhanceRequest", "Request/reply; answered with EnhanceReply."),
        "policy": (n.policy(), "PolicyRequest", "Request/reply; answered with PolicyReply."),
    }
    schemas = json_schemas()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Comfyline messaging",
            "version": str(SCHEMA_VERSION),
            "description": "Every message carries `traceparent`, `Content-Type` and, on "
            "JetStream, `Nats-Msg-Id` headers. Readers ignore unknown fields.",
        },
        "defaultContentType": "application/json",
        "channels": {
            cid: {"address": address, "description": desc, "messages": {msg: _ref(msg)}}
            for cid, (address, msg, desc) in channels.items()
        },
        "components": {
            "messages": {name: {"payload": schema} for name, schema in schemas.items()},
        },
    }
