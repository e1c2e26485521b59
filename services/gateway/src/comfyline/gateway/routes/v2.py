"""``/api/v2``: the Comfy API v2 job routes over the same jobs service as ``/v1``.

A v2 job is a workflow job (the graph, checked against the live fleet and routed to the servers
that can run it). Errors on these routes use v2's envelope (``{"error": {"code", "message",
"details"}}``, see errors.py). What is served and every deviation: docs/api-v2.md.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from comfyline.contracts import (
    TERMINAL_EVENTS,
    ComfylineError,
    ErrorCode,
    EventKind,
    JobEvent,
    JobRecord,
    JobState,
    Progress,
    owner_token,
)
from comfyline.runtime.metrics import LISTENERS

from ..auth import Principal
from ..deps import Gateway, GatewayDep, StatusUser, SubmitUser
from ..errors import ApiError, request_id_of
from ..follow import Overflow, Tick, follow
from ..schemas import JobCreate
from ..streams import EventStreamResponse
from .events import SSE_HEADERS, last_event_id
from .v2_assets import RETENTION, output_view

# Not in Comfyline's OpenAPI document: the contract of these routes is the Comfy API v2's own.
log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v2", tags=["comfy api v2"], include_in_schema=False)
_STATUS = {
    JobState.QUEUED: "queued",
    JobState.ENHANCING: "queued",
    JobState.DISPATCHED: "queued",
    JobState.RUNNING: "running",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "canceled",
    JobState.TIMED_OUT: "failed",
}
#: Events that are only a change of state on v2's stream.
_STATUS_KINDS = frozenset(
    {
        EventKind.SUBMITTED,
        EventKind.ENHANCED,
        EventKind.DISPATCHED,
        EventKind.STARTED,
        EventKind.RETRYING,
        EventKind.WAITING,
    }
)


class JobSubmit(BaseModel):
    """``POST /api/v2/jobs``: an API-format workflow."""

    model_config = ConfigDict(extra="allow")

    workflow: dict[str, Any]
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    webhook_url: str | None = Field(default=None, description="extension: signed webhooks")
    priority: int | None = Field(
        default=None, ge=-1_000_000, le=1_000_000, description="advisory; below 0: batch lane"
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def progress_view(progress: Progress) -> dict[str, Any]:
    """Comfyline's progress in v2's ``Progress`` shape."""
    return {
        "value": max(0.0, min(1.0, (progress.percent or 0) / 100)),
        "nodes_done": progress.nodes_done or 0,
        "nodes_total": progress.nodes_total or 0,
        "current_node": progress.node_id,
        "current_node_class": progress.node_type,
        "step": progress.step,
        "steps": progress.steps,
    }


def job_view(gw: Gateway, request: Request, record: JobRecord) -> dict[str, Any]:
    """A job in v2's shape."""
    base = f"{gw.base_url(request)}/api/v2/jobs/{record.id}"
    outputs = [output_view(gw, record, ref, gw.base_url(request)) for ref in record.outputs]
    queue_ms = execution_ms = None
    if record.started_at:
        queue_ms = int((record.started_at - record.created_at).total_seconds() * 1000)
        if record.finished_at:
            execution_ms = int((record.finished_at - record.started_at).total_seconds() * 1000)
    progress = progress_view(record.progress) if record.progress is not None else None
    error = None
    if record.error is not None:
        error = {"code": record.error.code.value, "message": record.error.message}
    return {
        "id": record.id,
        "status": _STATUS[record.status],
        "created_at": record.created_at.isoformat(),
        "started_at": _iso(record.started_at),
        "completed_at": _iso(record.finished_at),
        "expires_at": (record.created_at + RETENTION).isoformat(),
        "queue_position": None,
        "progress": progress,
        "outputs": outputs,
        "error": error,
        "metrics": {"queue_ms": queue_ms, "execution_ms": execution_ms},
        "metadata": record.metadata,
        "urls": {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"},
    }


def lane(user: Principal, priority: int | None) -> str | None:
    """The lane of v2's advisory ``priority``: below 0 is the batch lane; a key held to one
    lane keeps to it (the priority is advice, never a reason to refuse)."""
    if priority is not None and priority < 0 and user.lane in (None, "batch"):
        return "batch"
    return None


@router.get("/health", summary="Health (v2)")
async def v2_health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/jobs", status_code=201, summary="Submit a workflow (v2)")
async def v2_submit_job(
    body: JobSubmit,
    request: Request,
    user: SubmitUser,
    gw: GatewayDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    """Check the workflow against the live fleet and queue it; the job (201)."""
    try:
        create = JobCreate.model_validate(
            {
                "workflow": body.workflow,
                "metadata": body.metadata,
                "webhook": {"url": body.webhook_url} if body.webhook_url else None,
                "priority": lane(user, body.priority),
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ApiError(
            422, ErrorCode.VALIDATION_ERROR, f"{field}: {first['msg']}", details={"field": field}
        ) from exc
    try:
        result = await gw.job_service.submit(user, create, idempotency_key, request_id_of(request))
    except ApiError as exc:
        if exc.code is ErrorCode.IDEMPOTENCY_CONFLICT and "job_id" in (exc.details or {}):
            raise ApiError(
                422,
                ErrorCode.IDEMPOTENCY_KEY_REUSE,
                "this Idempotency-Key was used with a different request body",
                details=exc.details,
            ) from exc
        raise  # in flight: 409 idempotency_conflict with Retry-After
    headers = {"Location": f"{gw.base_url(request)}/api/v2/jobs/{result.record.id}"}
    if result.replayed:  # the recorded answer again: same job, no second run
        headers["Idempotency-Replayed"] = "true"
    return JSONResponse(job_view(gw, request, result.record), 201, headers=headers)


@router.get("/jobs", summary="List jobs (v2)")
async def v2_list_jobs(
    request: Request,
    user: StatusUser,
    gw: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """The caller's jobs, newest first; ``next_cursor`` only when there are more."""
    page = await gw.job_service.page(owner_token(user.owner_id), cursor=cursor, limit=limit)
    jobs = [
        {
            "id": r.id,
            "status": _STATUS[r.status],
            "create_time": r.created_at.isoformat(),
            "update_time": r.updated_at.isoformat(),
            "metadata": r.metadata,
        }
        for r in page.records
    ]
    found: dict[str, Any] = {"jobs": jobs}
    if page.next_cursor:
        found["next_cursor"] = page.next_cursor
    return found


@router.get("/jobs/{job_id}", summary="Read a job (v2)")
async def v2_get_job(job_id: str, request: Request, user: StatusUser, gw: GatewayDep) -> Any:
    return job_view(gw, request, await gw.job_service.load(user, job_id))


@router.get("/jobs/{job_id}/workflow", summary="The workflow behind a job (v2)")
async def v2_get_workflow(job_id: str, user: StatusUser, gw: GatewayDep) -> dict[str, Any]:
    record = await gw.job_service.load(user, job_id)
    return {"workflow": record.input.get("workflow") or {}, "format": "api"}


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job (v2)")
async def v2_cancel_job(job_id: str, request: Request, user: StatusUser, gw: GatewayDep) -> Any:
    """Idempotent: a job that has ended is answered as it is."""
    record = await gw.job_service.load(user, job_id)
    if not record.status.terminal:
        try:
            record = await gw.job_service.cancel(user, job_id)
        except ApiError as exc:
            if exc.code is not ErrorCode.JOB_ALREADY_TERMINAL:
                raise
            record = await gw.job_service.load(user, job_id)
    view = job_view(gw, request, record)
    if not record.status.terminal:
        view["status"] = "canceling"
    return view


# --- live events -----------------------------------------------------------------------------
def _frame(seq: int, event: str, data: dict[str, Any]) -> bytes:
    return (
        f"id: {seq}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
    )


async def _v2_frames(gw: Gateway, seq: int, event: JobEvent, base: str) -> list[bytes]:
    """One job event as v2's frames (``status``, ``progress``, ``preview``, ``output``)."""
    status = {"status": _STATUS[event.status], "queue_position": event.queue_position}
    if event.kind in _STATUS_KINDS:
        return [_frame(seq, "status", status)]
    if event.kind is EventKind.PROGRESS and event.progress is not None:
        return [_frame(seq, "progress", progress_view(event.progress))]
    if event.kind is EventKind.PREVIEW and event.preview is not None:
        try:
            image = await gw.store.get_bytes(event.preview.key)
        except ComfylineError:
            return []  # previews are best effort; a newer one replaces this one
        preview = {
            "node_id": event.preview.node_id or "",
            "content_type": event.preview.content_type,
            "data_base64": base64.b64encode(image).decode(),
        }
        return [_frame(seq, "preview", preview)]
    if event.kind is EventKind.COMPLETED:
        record = await gw.jobs.find(event.job_id)
        outputs = record.outputs if record is not None else []
        frames = [
            _frame(seq, "output", output_view(gw, record, ref, base))
            for ref in outputs
            if record is not None
        ]
        return [*frames, _frame(seq, "status", status)]
    if event.kind in TERMINAL_EVENTS:
        frames = []
        if event.error is not None:
            message = f"{event.error.code.value}: {event.error.message}"
            frames.append(_frame(seq, "log", {"level": "error", "message": message}))
        return [*frames, _frame(seq, "status", status)]
    return []


async def _v2_stream(
    gw: Gateway, job_id: str, after: int | None, base: str
) -> AsyncIterator[bytes]:
    with LISTENERS.labels("sse").track_inprogress():
        yield f"retry: {gw.settings.sse_retry_ms}\n\n".encode()
        items = follow(
            gw.jobs, gw.fanout, job_id=job_id, after=after, heartbeat_s=gw.settings.sse_heartbeat_s
        )
        try:
            async for item in items:
                if isinstance(item, Tick):
                    yield b": keepalive\n\n"
                    continue
                for frame in await _v2_frames(gw, *item, base):
                    yield frame
        except Overflow:
            return  # the client reconnects (with Last-Event-ID) and misses nothing
        except ComfylineError as exc:
            log.warning("v2 event stream ended", extra={"code": exc.code.value})


@router.get("/jobs/{job_id}/events", summary="Follow a job (v2 SSE)")
async def v2_job_events(
    job_id: str,
    request: Request,
    user: StatusUser,
    gw: GatewayDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventStreamResponse:
    """The job's events as v2's ``status``, ``progress``, ``preview``, ``output`` and ``log``
    frames: everything from the start (or after ``Last-Event-ID``), then live, until the
    terminal ``status`` (at once, for a client that has seen every event of an ended job)."""
    record = await gw.job_service.load(user, job_id)
    after = last_event_id(last_event_id_header, None)
    stream = _v2_stream(gw, job_id, after, gw.base_url(request))
    if record.status.terminal and after is not None:
        if not await gw.job_service.has_events_after(job_id, after):
            status = {"status": _STATUS[record.status], "queue_position": None}
            stream = _once(_frame(after, "status", status))
    return EventStreamResponse(stream, headers=SSE_HEADERS)


async def _once(frame: bytes) -> AsyncIterator[bytes]:
    yield frame
