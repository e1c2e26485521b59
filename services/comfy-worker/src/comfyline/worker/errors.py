"""What can go wrong while a worker runs a job, each with a stable code.

Foreign failures (aiohttp, websockets, minio, ComfyUI's own error bodies and frames) are translated
here, at the edge, so the rest of the worker only sees these::

    WorkerError(code, message, node_id, node_type)       ComfylineError with the failing node
    ├── ComfyUnavailable      comfy_unavailable: ComfyUI unreachable, 5xx, socket gone (transient)
    ├── PromptRejected        comfy_validation | comfy_missing_node | comfy_missing_model
    ├── ExecutionFailed       comfy_execution_error | comfy_out_of_memory | comfy_missing_model
    ├── RunInterrupted        comfy_interrupted: someone else interrupted ComfyUI (transient)
    ├── RunCancelled          cancelled: our own cancel, reported as ``cancelled``, not a failure
    └── InputError            asset_not_found | input_fetch_failed: a job input cannot be had

Whether a failure may pass by itself is one rule, :func:`is_transient`, used by the one place
that turns failures into naks or terms (``handler.outcome``).
"""

from __future__ import annotations

import re
from typing import Any

from comfyline.contracts import TRANSIENT_CODES, ComfylineError, ErrorCode, JobError

#: Node inputs whose combo options are model files (a value missing from them is a missing model).
MODEL_INPUTS = frozenset(
    {
        "ckpt_name",
        "unet_name",
        "vae_name",
        "clip_name",
        "clip_name1",
        "clip_name2",
        "lora_name",
        "control_net_name",
        "model_name",
        "upscale_model_name",
        "style_model_name",
        "audio_encoder_name",
        "sonic_unet",
        "model_pack_name",
    }
)
_MODEL_FILE = re.compile(r"\.(safetensors|ckpt|pt|pth|bin|gguf|sft|onnx)\b", re.IGNORECASE)
_OOM = re.compile(r"out of memory|outofmemory|allocation on device", re.IGNORECASE)


class WorkerError(ComfylineError):
    """A failure of one run, with the ComfyUI node that failed when there is one."""

    code = ErrorCode.INTERNAL_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        node_id: str | None = None,
        node_type: str | None = None,
        details: dict[str, Any] | None = None,
        transient: bool | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.node_id = node_id
        self.node_type = node_type
        self._transient = transient

    @property
    def transient(self) -> bool:
        """True when trying again later may succeed (see :func:`is_transient`)."""
        return is_transient(self.code) if self._transient is None else self._transient

    def job_error(self) -> JobError:
        """The error as a job record and a ``failed`` event carry it."""
        return JobError(
            code=self.code,
            message=self.message,
            node_id=self.node_id,
            node_type=self.node_type,
            details=self.details,
            retryable=self.transient,
        )


class ComfyUnavailable(WorkerError):
    """ComfyUI could not be reached, answered 5xx, or its socket is gone for good."""

    code = ErrorCode.COMFY_UNAVAILABLE


class PromptRejected(WorkerError):
    """ComfyUI refused the graph (400 or ``node_errors`` on 200)."""

    code = ErrorCode.COMFY_VALIDATION


class ExecutionFailed(WorkerError):
    """A node raised while the graph ran (``execution_error``)."""

    code = ErrorCode.COMFY_EXECUTION_ERROR


class RunInterrupted(WorkerError):
    """ComfyUI reported ``execution_interrupted`` that we did not ask for."""

    code = ErrorCode.COMFY_INTERRUPTED


class RunCancelled(WorkerError):
    """The job was cancelled (``control.cancel``) and its prompt stopped or removed."""

    code = ErrorCode.CANCELLED


class RunWithdrawn(WorkerError):
    """The prompt was taken back from its server's queue before it started, to run on a server
    that became idle (see ``JobControl.move``): not a failure, the job goes on there."""

    code = ErrorCode.CANCELLED


class InputError(WorkerError):
    """A job input (an asset or an earlier job's output) cannot be found or fetched."""

    code = ErrorCode.ASSET_NOT_FOUND


def is_transient(code: ErrorCode) -> bool:
    """Failures that may pass by themselves: the contract's list, plus a foreign interrupt."""
    return code in TRANSIENT_CODES or code == ErrorCode.COMFY_INTERRUPTED


def _is_missing_model(error: dict[str, Any]) -> bool:
    if error.get("type") != "value_not_in_list":
        return False
    extra = error.get("extra_info") or {}
    name = str(extra.get("input_name") or error.get("details", "")).split(":")[0].strip()
    return name in MODEL_INPUTS or bool(_MODEL_FILE.search(str(extra.get("received_value", ""))))


def _node_error_text(node_id: str, entry: dict[str, Any]) -> tuple[str, bool]:
    errors = [e for e in entry.get("errors") or [] if isinstance(e, dict)]
    missing_model = any(_is_missing_model(e) for e in errors)
    first = errors[0] if errors else {}
    text = str(first.get("message") or "invalid node")
    if first.get("details"):
        text = f"{text}: {first['details']}"
    return f"node {node_id} ({entry.get('class_type', '?')}): {text}", missing_model


def rejection(body: Any, graph: dict[str, dict[str, Any]]) -> PromptRejected:
    """Classify ComfyUI's answer to a refused ``POST /prompt`` (400 body or 200 node_errors)."""
    body = body if isinstance(body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    node_errors = body.get("node_errors") if isinstance(body.get("node_errors"), dict) else {}
    kind = str(error.get("type") or "")
    message = str(error.get("message") or "ComfyUI refused the prompt")
    details = {"comfy_error": kind, "node_errors": node_errors}
    if kind == "missing_node_type" or (kind == "invalid_prompt" and "does not exist" in message):
        node_id = _node_id_of(error.get("details"))
        node_type = str(graph.get(node_id or "", {}).get("class_type") or "") or None
        return PromptRejected(
            message,
            code=ErrorCode.COMFY_MISSING_NODE,
            node_id=node_id,
            node_type=node_type,
            details=details,
        )
    for node_id, entry in node_errors.items():
        if not isinstance(entry, dict):
            continue
        text, missing_model = _node_error_text(str(node_id), entry)
        return PromptRejected(
            text,
            code=ErrorCode.COMFY_MISSING_MODEL if missing_model else ErrorCode.COMFY_VALIDATION,
            node_id=str(node_id),
            node_type=entry.get("class_type"),
            details=details,
        )
    return PromptRejected(f"{message}: {error.get('details') or kind}", details=details)


def _node_id_of(details: Any) -> str | None:
    # 0.3.64 says "Node ID '#1'" for an unknown class_type.
    match = re.search(r"#([^'\"]+)", str(details or ""))
    return match.group(1) if match else None


def execution_failure(data: dict[str, Any]) -> ExecutionFailed:
    """Classify an ``execution_error`` frame (or the same data from ``/history``)."""
    exc_type = str(data.get("exception_type") or "")
    exc_message = str(data.get("exception_message") or "").strip()
    node_id = str(data["node_id"]) if data.get("node_id") is not None else None
    node_type = data.get("node_type")
    text = f"{exc_type}: {exc_message}" if exc_type else exc_message or "node failed"
    if _OOM.search(exc_type) or _OOM.search(exc_message):
        code = ErrorCode.COMFY_OUT_OF_MEMORY
    elif exc_type.endswith("FileNotFoundError") and _MODEL_FILE.search(exc_message):
        code = ErrorCode.COMFY_MISSING_MODEL
    else:
        code = ErrorCode.COMFY_EXECUTION_ERROR
    return ExecutionFailed(
        text[:2000],
        code=code,
        node_id=node_id,
        node_type=str(node_type) if node_type else None,
        details={"exception_type": exc_type},
    )
