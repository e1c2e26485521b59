"""What the sync and async clients share: where the gateway is, typed results and errors, the SSE
parser and the retry policy. No I/O happens here, so both clients behave alike."""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
RETRY_STATUSES = frozenset({429, 503})
DEFAULT_STACK = Path(".comfyline/stack.json")


class ComfylineError(Exception):
    """An error answer from the gateway: its HTTP status, its stable ``code`` and its message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.request_id = request_id
        self.retry_after_s = retry_after_s

    @classmethod
    def from_response(cls, response: httpx.Response) -> ComfylineError:
        """The gateway's envelope ``{"error", "code", "details", "request_id"}``."""
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        return cls(
            response.status_code,
            str(body.get("code") or f"http_{response.status_code}"),
            str(body.get("error") or response.reason_phrase or "request failed"),
            body.get("details") if isinstance(body.get("details"), dict) else None,
            body.get("request_id") or response.headers.get("X-Request-ID"),
            retry_after(response),
        )


class ConnectionFailed(ComfylineError):
    """The gateway could not be reached (after the retries)."""

    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(0, "connection_failed", f"cannot reach {url}: {cause}")


class JobFailed(ComfylineError):
    """A job waited for ended without succeeding; ``job`` is its last state."""

    def __init__(self, job: Job) -> None:
        error = job.error or {}
        super().__init__(
            0,
            str(error.get("code") or job.status),
            str(error.get("message") or f"job {job.id} ended {job.status}"),
            error.get("details") if isinstance(error.get("details"), dict) else None,
        )
        self.job = job


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class Output(_Wire):
    """One output file of a job."""

    index: int
    kind: str
    content_type: str
    size: int
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    url: str
    content_url: str


class Job(_Wire):
    """A job as the gateway shows it (``GET /v1/jobs/{id}``); unknown fields are kept."""

    id: str
    model: str
    status: str
    progress: dict[str, Any] | None = None
    queue_position: int | None = None
    created_at: datetime
    finished_at: datetime | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    outputs: list[Output] = Field(default_factory=list)
    error: dict[str, Any] | None = None
    links: dict[str, str] = Field(default_factory=dict)

    @property
    def done(self) -> bool:
        """True once the job can never change again."""
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class Event(_Wire):
    """One job event (SSE ``data``); ``seq`` is its id for ``Last-Event-ID``."""

    job_id: str
    seq: int
    event: str
    kind: str
    status: str
    model: str
    progress: dict[str, Any] | None = None
    preview: dict[str, Any] | None = None
    outputs: list[Output] = Field(default_factory=list)
    error: dict[str, Any] | None = None
    queue_position: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class Asset(_Wire):
    """An uploaded file; put its ``id`` in a job's input."""

    id: str
    size: int
    content_type: str | None = None
    filename: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Target:
    """Where the gateway is and the key to use."""

    base_url: str
    api_key: str

    @classmethod
    def find(
        cls, base_url: str | None = None, api_key: str | None = None, stack: Path | None = None
    ) -> Target:
        """Arguments first, then ``COMFYLINE_URL`` / ``COMFYLINE_API_KEY``, then the local stack's
        ``stack.json`` (``COMFYLINE_STACK``, else ``.comfyline/stack.json``)."""
        base_url = base_url or os.environ.get("COMFYLINE_URL")
        api_key = api_key or os.environ.get("COMFYLINE_API_KEY")
        path = stack or Path(os.environ.get("COMFYLINE_STACK") or DEFAULT_STACK)
        if (not base_url or not api_key) and path.exists():
            info = json.loads(path.read_text())
            base_url = base_url or info.get("gateway_url")
            api_key = api_key or info.get("api_key")
        if not base_url:
            raise ComfylineError(
                0,
                "no_gateway",
                f"no gateway: pass its URL, set COMFYLINE_URL, or run `comfyline up` ({path})",
            )
        if not api_key:
            raise ComfylineError(0, "no_api_key", "no API key: pass one or set COMFYLINE_API_KEY")
        return cls(base_url.rstrip("/"), api_key)


@dataclass
class Retry:
    """Retries with backoff on 429 and 503 (honouring ``Retry-After``) and on lost connections.

    ``on_retry(attempt, delay_s, reason)`` is called before each wait."""

    attempts: int = 5
    base_s: float = 0.5
    max_s: float = 30.0
    on_retry: Any = None

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        hinted = retry_after(response) if response is not None else None
        if hinted is not None:
            return min(hinted, self.max_s)
        backoff: float = min(self.max_s, self.base_s * 2 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)

    def notify(self, attempt: int, delay_s: float, reason: str) -> None:
        if self.on_retry is not None:
            self.on_retry(attempt, delay_s, reason)


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the delta form), or None."""
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def new_idempotency_key() -> str:
    """A fresh key, so a submission retried after a lost answer makes one job, not two."""
    return f"cl-{uuid.uuid4().hex}"


def job_body(
    model: str, input: Mapping[str, Any] | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": dict(input or {})}
    body.update({k: v for k, v in options.items() if v is not None})
    return body


def error_of(response: httpx.Response) -> ComfylineError | None:
    return ComfylineError.from_response(response) if response.is_error else None


def job_query(status: str | None, model: str | None, limit: int | None) -> dict[str, Any]:
    return {k: v for k, v in {"status": status, "model": model, "limit": limit}.items() if v}


@dataclass
class SseParser:
    """Feeds lines of a ``text/event-stream``; yields each complete event's fields."""

    data: list[str] = field(default_factory=list)
    event: str = "message"
    id: str | None = None

    def feed(self, line: str) -> Iterator[tuple[str, str | None, str]]:
        if line == "":
            if self.data:
                yield self.event, self.id, "\n".join(self.data)
            self.data, self.event = [], "message"
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id":
            self.id = value


def parse_event(kind: str, data: str) -> Event | None:
    """A job event, or None for other stream items (worker events, unknown shapes)."""
    if kind == "worker":
        return None
    try:
        return Event.model_validate_json(data)
    except ValueError:
        return None


def filename_for(job: Job, output: Output) -> str:
    subtype = output.content_type.split("/")[-1].split(";")[0].replace("jpeg", "jpg")
    extension = {"mpeg": "mp3", "x-wav": "wav", "quicktime": "mov"}.get(subtype, subtype)
    return f"{job.id}_{output.index}.{extension}"
