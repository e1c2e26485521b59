"""``/api/v2``: the Comfy API v2 job routes over the same jobs service as ``/v1``.

A v2 job is a workflow job (the graph, checked against the live fleet and routed to the servers
that can run it). Errors on these routes use v2's envelope (``{"error": {"code", "message",
"details"}}``, see errors.py). What is served and every deviation: docs/api-v2.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from comfyline.contracts import ErrorCode, JobRecord, JobState, owner_token

from ..auth import Principal
from ..deps import Gateway, GatewayDep, StatusUser, SubmitUser
from ..errors import ApiError, not_found, request_id_of
from ..schemas import JobCreate

# Not in Comfyline's OpenAPI document: the contract of these routes is the Comfy API v2's own.
router = APIRouter(prefix="/api/v2", tags=["comfy api v2"], include_in_schema=False)
RETENTION = timedelta(days=7)
LINK_S = 3600
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


class JobSubmit(BaseModel):
    """``POST /api/v2/jobs``: an API-format workflow."""

    model_config = ConfigDict(extra="allow")

    workflow: dict[str, Any]
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    webhook_url: str | None = Field(default=None, description="extension: signed webhooks")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _output_id(job_id: str, index: int) -> str:
    return f"{job_id}.{index}"


def job_view(gw: Gateway, request: Request, record: JobRecord) -> dict[str, Any]:
    """A job in v2's shape."""
    base = f"{gw.base_url(request)}/api/v2/jobs/{record.id}"
    expires = datetime.now().astimezone() + timedelta(seconds=LINK_S)
    outputs = [
        {
            "node_id": ref.node_id or "",
            "name": ref.filename or ref.key.rsplit("/", 1)[-1],
            "type": ref.kind.value if ref.kind.value in {"image", "video", "audio"} else "file",
            "content_type": ref.content_type,
            "size_bytes": ref.size,
            "id": _output_id(record.id, ref.index),
            "hash": None,
            "url": gw.store.presign_get(ref.key, LINK_S, filename=ref.key.rsplit("/", 1)[-1]),
            "url_expires_at": expires.isoformat(),
            "job_id": record.id,
        }
        for ref in record.outputs
    ]
    queue_ms = execution_ms = None
    if record.started_at:
        queue_ms = int((record.started_at - record.created_at).total_seconds() * 1000)
        if record.finished_at:
            execution_ms = int((record.finished_at - record.started_at).total_seconds() * 1000)
    progress = None
    if record.progress is not None:
        value = max(0.0, min(1.0, (record.progress.percent or 0) / 100))
        progress = {"value": value, "nodes_done": 0, "nodes_total": 0}
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
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ApiError(
            422, ErrorCode.VALIDATION_ERROR, f"{field}: {first['msg']}", details={"field": field}
        ) from exc
    result = await gw.job_service.submit(user, create, idempotency_key, request_id_of(request))
    headers = {"Location": f"{gw.base_url(request)}/api/v2/jobs/{result.record.id}"}
    if result.replayed:
        headers["Idempotency-Replayed"] = "true"
    status = 200 if result.replayed else 201
    return JSONResponse(job_view(gw, request, result.record), status, headers=headers)


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


_NOT_SERVED = (
    ("POST", "/assets"),
    ("POST", "/assets/from-hash"),
    ("POST", "/assets/from-path"),
    ("HEAD", "/assets/by-hash/{asset_hash}"),
    ("GET", "/assets/{asset_id}"),
    ("DELETE", "/assets/{asset_id}"),
    ("GET", "/jobs/{job_id}/events"),
)


async def not_served(request: Request, user: StatusUser) -> JSONResponse:
    """501 ``not_implemented`` (contract-legal; the SDK falls back to polling for events)."""
    message = f"{request.method} {request.url.path} is not served by Comfyline yet"
    return JSONResponse({"error": {"code": "not_implemented", "message": message}}, 501)


for _method, _path in _NOT_SERVED:
    router.add_api_route(
        _path, not_served, methods=[_method], include_in_schema=False, name=f"v2 {_method} {_path}"
    )


async def _output(gw: Gateway, user: Principal, asset_id: str) -> tuple[JobRecord, int]:
    job_id, _, index = asset_id.rpartition(".")
    if not job_id or not index.isdigit():
        raise not_found("asset", id=asset_id[:80])
    return await gw.job_service.load(user, job_id), int(index)


@router.get("/assets/{asset_id}/content", summary="An output's bytes (v2)")
async def v2_asset_content(
    asset_id: str,
    user: StatusUser,
    gw: GatewayDep,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    """A job output's bytes, streamed from storage."""
    record, index = await _output(gw, user, asset_id)
    ref = gw.job_service.output(record, index)
    return StreamingResponse(
        await gw.job_service.output_chunks(record, ref), media_type=ref.content_type
    )
