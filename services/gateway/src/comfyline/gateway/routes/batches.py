"""Batches: submit many jobs at once, follow them as one, cancel them as one."""

from __future__ import annotations

from fastapi import APIRouter, Request

from comfyline.contracts import BatchRecord, ErrorCode, JobRecord, JobState

from ..auth import Principal
from ..deps import Gateway, GatewayDep, StatusUser, SubmitUser
from ..errors import ApiError, error_responses, request_id_of
from ..schemas import BatchCounts, BatchCreate, BatchPublic

router = APIRouter(prefix="/v1/batches", tags=["batches"])
_COUNTED = {
    JobState.QUEUED: "queued",
    JobState.ENHANCING: "queued",
    JobState.DISPATCHED: "queued",
    JobState.RUNNING: "running",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
    JobState.TIMED_OUT: "timed_out",
}


async def _public(
    gw: Gateway, request: Request, user: Principal, record: BatchRecord, jobs: list[JobRecord]
) -> BatchPublic:
    counts = BatchCounts(lost=len(record.lost))
    for job in jobs:
        name = _COUNTED[job.status]
        setattr(counts, name, getattr(counts, name) + 1)
    total = len(record.job_ids)
    done = sum(1 for job in jobs if job.status.terminal) + len(record.lost)
    base = gw.base_url(request)
    if record.cancelled_at is not None:
        status: str = "cancelled"
    else:
        status = "completed" if done == total else "running"
    return BatchPublic.model_validate(
        {
            "id": record.id,
            "status": status,
            "priority": record.priority,
            "total": total,
            "done": done,
            "progress": round(100.0 * done / total, 1) if total else 100.0,
            "counts": counts,
            "created_at": record.created_at,
            "cancelled_at": record.cancelled_at,
            "metadata": record.metadata,
            "jobs": [await gw.views.job(job, base=base, principal=user) for job in jobs],
        }
    )


@router.post(
    "",
    status_code=202,
    summary="Submit a batch of jobs",
    responses=error_responses(400, 401, 403, 413, 422, 429, 503),
)
async def create_batch(
    body: BatchCreate, request: Request, user: SubmitUser, gw: GatewayDep
) -> BatchPublic:
    """Every job request is validated before any is submitted (422 lists each invalid one by
    `index`); the owner's quotas and each model's queue cap must hold all of them. Each becomes
    a job with its own id, at `batch` priority unless the batch or the job says otherwise."""
    record, jobs = await gw.batches.create(user, body, request_id_of(request))
    return await _public(gw, request, user, record, jobs)


@router.get("/{batch_id}", summary="Read a batch", responses=error_responses(401, 404, 429, 503))
async def get_batch(
    batch_id: str, request: Request, user: StatusUser, gw: GatewayDep
) -> BatchPublic:
    """Progress (jobs per state, percent ended) and every job with its outputs."""
    record, jobs = await gw.batches.members(await gw.batches.get(user, batch_id))
    return await _public(gw, request, user, record, jobs)


@router.delete(
    "/{batch_id}",
    status_code=202,
    summary="Cancel a batch",
    responses=error_responses(401, 404, 429, 503),
)
async def cancel_batch(
    batch_id: str, request: Request, user: StatusUser, gw: GatewayDep
) -> BatchPublic:
    """Cancel every job of the batch that has not ended (ended ones keep their outcome)."""
    record, jobs = await gw.batches.members(await gw.batches.get(user, batch_id))
    for job in jobs:
        if not job.status.terminal:
            reply = await gw.job_service.ask_cancel(user, job.id)
            if not reply.ok and reply.code != ErrorCode.JOB_ALREADY_TERMINAL.value:
                raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, reply.error or "cancel refused")
    record, jobs = await gw.batches.members(await gw.batches.mark_cancelled(record))
    return await _public(gw, request, user, record, jobs)
