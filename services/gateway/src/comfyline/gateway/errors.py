"""The one error envelope, and the handlers that turn every failure into it.

Every error answer, from any route or middleware, is::

    {"error": "short message", "code": "stable_code", "details": {...}, "request_id": "req_..."}

Hierarchy::

    ComfylineError (contracts)        code -> HTTP status via STATUS_BY_CODE
    └── ApiError                      the gateway's own, with an explicit status and headers

Foreign errors (FastAPI's validation errors, Starlette's HTTP exceptions, anything unexpected)
are translated here and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from comfyline.contracts import ComfylineError, ErrorCode, new_request_id

log = logging.getLogger(__name__)

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.UNKNOWN_MODEL: 422,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_MANY_ACTIVE_JOBS: 429,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.IDEMPOTENCY_KEY_REUSE: 422,
    ErrorCode.HASH_MISMATCH: 409,
    ErrorCode.BLOB_NOT_FOUND: 404,
    ErrorCode.JOB_ALREADY_TERMINAL: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.ASSET_NOT_FOUND: 422,
    ErrorCode.INPUT_FETCH_FAILED: 422,
    ErrorCode.URL_NOT_ALLOWED: 422,
    ErrorCode.CONTENT_POLICY: 422,
    ErrorCode.QUEUE_FULL: 503,
    ErrorCode.MODEL_UNAVAILABLE: 503,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
    ErrorCode.ENHANCER_UNAVAILABLE: 503,
    ErrorCode.POLICY_UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 504,
}


class ErrorBody(BaseModel):
    """The error envelope every route answers with."""

    error: str = Field(description="a short, human-readable message")
    code: str = Field(description="a stable machine-readable code", examples=["not_found"])
    details: dict[str, Any] = Field(default_factory=dict)
    request_id: str = Field(examples=["req_01kax7r2m0a1b2c3d4e5f6g7h8"])


class ApiError(ComfylineError):
    """An error with its HTTP status (and headers such as ``Retry-After``)."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.status = status
        self.headers = dict(headers or {})


def not_found(what: str = "resource", **details: Any) -> ApiError:
    """404 for a missing id, and equally for another owner's id."""
    return ApiError(404, ErrorCode.NOT_FOUND, f"{what} not found", details=details)


def request_id_of(request: Request) -> str:
    """The request's id (set by the middleware; made here if a request got past it)."""
    rid = request.scope.setdefault("state", {}).get("request_id")
    if not rid:
        rid = new_request_id()
        request.scope["state"]["request_id"] = rid
    return str(rid)


#: Comfyline codes that the Comfy API v2 names otherwise.
V2_CODES = {
    ErrorCode.VALIDATION_ERROR.value: "invalid_request",
    ErrorCode.INVALID_JSON.value: "invalid_request",
    ErrorCode.JOB_ALREADY_TERMINAL.value: "already_completed",
    ErrorCode.ASSET_NOT_FOUND.value: "missing_asset",
}


def error_payload(
    code: str, message: str, request_id: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The envelope as a dict (for middleware that answers before routing)."""
    return {"error": message, "code": code, "details": details or {}, "request_id": request_id}


#: Routes that speak OpenAI's dialect answer errors in OpenAI's shape (its SDKs parse it).
OPENAI_PATHS = frozenset({"/v1/images/generations", "/v1/images/edits", "/v1/audio/speech"})
_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


def openai_payload(
    status: int, code: str, message: str, details: dict[str, Any] | None
) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``, as OpenAI answers."""
    errors = (details or {}).get("errors") or [{}]
    param = errors[0].get("field") if isinstance(errors[0], dict) else None
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param or None, "code": code}}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An error answer in the envelope (OpenAI's shape on its routes, v2's on ``/api/v2``)."""
    rid = request_id_of(request)
    if request.url.path.rstrip("/") in OPENAI_PATHS:
        payload = openai_payload(status, code, message, details)
    elif request.url.path.startswith("/api/v2/"):
        v2_code = V2_CODES.get(code, code)
        payload = {"error": {"code": v2_code, "message": message, "details": details}}
        if code == ErrorCode.QUEUE_FULL.value:  # v2: 429 + Retry-After, which clients retry
            status, headers = 429, {"Retry-After": "10", **(headers or {})}
    else:
        payload = error_payload(code, message, rid, details)
    return JSONResponse(
        payload,
        status_code=status,
        headers={**(headers or {}), "X-Request-ID": rid},
    )


async def _comfyline_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ComfylineError)
    if isinstance(exc, ApiError):
        status, headers = exc.status, exc.headers
    else:
        status, headers = STATUS_BY_CODE.get(exc.code, 500), {}
    if status >= 500:
        log.warning("request failed", extra={"code": exc.code.value, "error": exc.message})
    return error_response(request, status, exc.code.value, exc.message, exc.details, headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return ".".join(parts)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"field": _field(e.get("loc", ())), "message": str(e.get("msg", "invalid"))}
        for e in exc.errors()
    ]
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return error_response(
            request,
            400,
            ErrorCode.INVALID_JSON.value,
            "body is not valid JSON",
            {"errors": problems},
        )
    first = problems[0] if problems else {"field": "", "message": "invalid request"}
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return error_response(
        request, 422, ErrorCode.VALIDATION_ERROR.value, message, {"errors": problems}
    )


_HTTP_CODES = {
    400: ErrorCode.VALIDATION_ERROR,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.RATE_LIMITED,
}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.INTERNAL_ERROR)
    message = exc.detail if isinstance(exc.detail, str) else code.value.replace("_", " ")
    return error_response(request, exc.status_code, code.value, message, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(request, 500, ErrorCode.INTERNAL_ERROR.value, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    """Route every kind of failure through the envelope."""
    app.add_exception_handler(ComfylineError, _comfyline_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


#: What every route documents besides its success (OpenAPI ``responses``).
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the given error statuses, all with the envelope."""
    descriptions = {
        400: "Malformed request",
        401: "Missing or invalid credentials",
        403: "Not allowed",
        404: "Not found (or another owner's)",
        409: "Conflict",
        413: "Body too large",
        415: "Unsupported media type",
        422: "Validation failed",
        429: "Rate limited or over a limit",
        503: "A dependency is unavailable or a queue is full",
        504: "A dependency did not answer in time",
    }
    return {
        status: {"model": ErrorBody, "description": descriptions.get(status, "Error")}
        for status in statuses
    }
