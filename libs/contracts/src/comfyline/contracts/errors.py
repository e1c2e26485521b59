"""Stable error codes and the base exception that carries one.

Every failure a user can see has a code from :class:`ErrorCode`; messages may change, codes never
do. Hierarchy::

    ComfylineError(code, message, details)
    └── (each service defines its own subclasses; foreign exceptions are translated at the edge)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Every error code a client, a webhook or a job record can carry."""

    # request problems (4xx at the gateway)
    VALIDATION_ERROR = "validation_error"
    INVALID_JSON = "invalid_json"
    UNKNOWN_MODEL = "unknown_model"
    NOT_FOUND = "not_found"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_ACTIVE_JOBS = "too_many_active_jobs"
    QUOTA_EXCEEDED = "quota_exceeded"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    IDEMPOTENCY_KEY_REUSE = "idempotency_key_reuse"
    JOB_ALREADY_TERMINAL = "job_already_terminal"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    ASSET_NOT_FOUND = "asset_not_found"
    HASH_MISMATCH = "hash_mismatch"
    BLOB_NOT_FOUND = "blob_not_found"
    INPUT_FETCH_FAILED = "input_fetch_failed"
    URL_NOT_ALLOWED = "url_not_allowed"
    QUEUE_FULL = "queue_full"
    MODEL_UNAVAILABLE = "model_unavailable"
    LANE_NOT_ALLOWED = "lane_not_allowed"
    ALREADY_RETRIED = "already_retried"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INVALID_WORKFLOW = "invalid_workflow"
    WORKFLOW_UNSERVABLE = "workflow_unservable"
    TIMEOUT = "timeout"
    # content policy and prompts
    CONTENT_POLICY = "content_policy"
    POLICY_UNAVAILABLE = "policy_unavailable"
    ENHANCER_UNAVAILABLE = "enhancer_unavailable"
    # job outcomes
    CANCELLED = "cancelled"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    QUEUE_DEADLINE_EXCEEDED = "queue_deadline_exceeded"
    MAX_ATTEMPTS_EXCEEDED = "max_attempts_exceeded"
    # ComfyUI and the worker
    COMFY_VALIDATION = "comfy_validation"
    COMFY_MISSING_NODE = "comfy_missing_node"
    COMFY_MISSING_MODEL = "comfy_missing_model"
    COMFY_OUT_OF_MEMORY = "comfy_out_of_memory"
    COMFY_EXECUTION_ERROR = "comfy_execution_error"
    COMFY_UNAVAILABLE = "comfy_unavailable"
    COMFY_INTERRUPTED = "comfy_interrupted"
    COMFY_NO_OUTPUT = "comfy_no_output"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    TEMPLATE_ERROR = "template_error"
    # pipelines (a template refused before any step runs)
    PIPELINE_UNKNOWN_REFERENCE = "pipeline_unknown_reference"
    PIPELINE_CYCLE = "pipeline_cycle"
    PIPELINE_KIND_MISMATCH = "pipeline_kind_mismatch"
    # hosted providers
    PROVIDER_RATE_LIMITED = "provider_rate_limited"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_ERROR = "provider_error"
    # catch-all
    INTERNAL_ERROR = "internal_error"


#: Codes of failures that may pass by themselves: a worker naks these with a delay.
TRANSIENT_CODES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.COMFY_UNAVAILABLE,
        ErrorCode.STORAGE_UNAVAILABLE,
        ErrorCode.SERVICE_UNAVAILABLE,
        ErrorCode.TIMEOUT,
        ErrorCode.COMFY_OUT_OF_MEMORY,
    }
)


class ComfylineError(Exception):
    """The root of every Comfyline exception: a stable code, a short message, details."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.value!r}, message={self.message!r})"
