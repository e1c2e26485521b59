"""Admins' control of the fleet: workers (list, drain, resume), model pauses, dead letters.

Orders are entries in the ``fleet`` bucket (``drain.<worker>``, ``pause.<model>``) that workers
and orchestrators watch; resuming deletes the entry. Every route here answers 403 to non-admins.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from comfyline.catalogue import UnknownModel
from comfyline.contracts import (
    ErrorCode,
    InvalidToken,
    ModelPause,
    WireModel,
    WorkerDrain,
    WorkerHeartbeat,
    drain_key,
    pause_key,
    utcnow,
)

from ..deps import AdminUser, Gateway, GatewayDep
from ..errors import ApiError, error_responses, request_id_of
from ..kv import nats_errors
from ..schemas import (
    DeadLetterList,
    DeadLetterPublic,
    JobPublic,
    ModelPausePublic,
    OrderCreate,
    WorkerAdmin,
    WorkerList,
)

router = APIRouter(tags=["admin"])
ADMIN_ERRORS = error_responses(401, 403, 503)


async def _order(gw: Gateway, key: str, order: WireModel | None) -> None:
    """Write an order to the ``fleet`` bucket, or delete it (``None``): resume."""
    kv = await gw.bus.kv(gw.names.bucket("fleet"))
    async with nats_errors(f"writing the fleet order {key}"):
        if order is None:
            await kv.delete(key)
        else:
            await kv.put(key, order.to_bytes())


def _worker_view(gw: Gateway, beat: WorkerHeartbeat) -> WorkerAdmin:
    drain = gw.orders.drains.get(beat.worker_id)
    return WorkerAdmin.of(beat, drain.reason if drain else None)


async def _live_worker(gw: Gateway, worker_id: str) -> WorkerHeartbeat:
    for beat in await gw.fleet.workers(fresh=True):
        if beat.worker_id == worker_id:
            return beat
    raise ApiError(
        404, ErrorCode.NOT_FOUND, "no live worker with that id", details={"id": worker_id}
    )


@router.get("/v1/workers", summary="List workers", responses=ADMIN_ERRORS)
async def list_workers(user: AdminUser, gw: GatewayDep) -> WorkerList:
    """Every live worker: servers, models, loaded model files, busy or idle, current jobs, last
    heartbeat, jobs done and failed, and whether it drains."""
    workers = sorted(await gw.fleet.workers(fresh=True), key=lambda w: w.worker_id)
    return WorkerList(data=[_worker_view(gw, w) for w in workers])


@router.get(
    "/v1/workers/{worker_id}", summary="Read a worker", responses=error_responses(401, 403, 404)
)
async def get_worker(worker_id: str, user: AdminUser, gw: GatewayDep) -> WorkerAdmin:
    """One live worker."""
    return _worker_view(gw, await _live_worker(gw, worker_id))


@router.post(
    "/v1/workers/{worker_id}/drain",
    summary="Drain a worker",
    responses=error_responses(401, 403, 404, 422, 503),
)
async def drain_worker(
    worker_id: str, user: AdminUser, gw: GatewayDep, body: OrderCreate | None = None
) -> WorkerAdmin:
    """The worker finishes the jobs it runs and takes no more (its heartbeat says `draining`);
    the queue moves to other workers. Lasts across the worker's restarts until resumed."""
    beat = await _live_worker(gw, worker_id)
    order = WorkerDrain(
        worker_id=worker_id,
        reason=body.reason if body else "",
        requested_at=utcnow(),
        requested_by=user.owner_id,
    )
    await _order(gw, drain_key(worker_id), order)
    gw.orders.drains[worker_id] = order  # this process knows at once; the watch confirms
    return _worker_view(gw, beat)


@router.post(
    "/v1/workers/{worker_id}/resume",
    summary="Resume a drained worker",
    responses=error_responses(401, 403, 404, 503),
)
async def resume_worker(worker_id: str, user: AdminUser, gw: GatewayDep) -> WorkerAdmin:
    """The worker takes work again."""
    try:
        key = drain_key(worker_id)
    except InvalidToken as exc:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such worker") from exc
    await _order(gw, key, None)
    gw.orders.drains.pop(worker_id, None)
    return _worker_view(gw, await _live_worker(gw, worker_id))


def _model_name(gw: Gateway, name: str) -> str:
    try:
        return gw.registry.get(name).name
    except UnknownModel as exc:
        raise ApiError(404, ErrorCode.UNKNOWN_MODEL, exc.message, details=exc.details) from exc


@router.post(
    "/v1/models/{name}/pause",
    summary="Pause a model",
    tags=["admin"],
    responses=error_responses(401, 403, 404, 422, 503),
)
async def pause_model(
    name: str, user: AdminUser, gw: GatewayDep, body: OrderCreate | None = None
) -> ModelPausePublic:
    """New and waiting jobs of the model stay queued (their `waiting_reason` says
    `model_paused`) and no worker fetches its work; running jobs finish. Submissions are still
    accepted. Queue deadlines still apply."""
    model = _model_name(gw, name)
    pause = ModelPause(
        model=model,
        reason=body.reason if body else "",
        paused_at=utcnow(),
        paused_by=user.owner_id,
    )
    await _order(gw, pause_key(model), pause)
    gw.orders.pauses[model] = pause
    return ModelPausePublic.of(model, pause)


@router.post(
    "/v1/models/{name}/resume",
    summary="Resume a paused model",
    tags=["admin"],
    responses=error_responses(401, 403, 404, 503),
)
async def resume_model(name: str, user: AdminUser, gw: GatewayDep) -> ModelPausePublic:
    """The model's queued jobs are dispatched again."""
    model = _model_name(gw, name)
    await _order(gw, pause_key(model), None)
    gw.orders.pauses.pop(model, None)
    return ModelPausePublic.of(model, None)


@router.get("/v1/dead-letters", summary="List dead letters", responses=ADMIN_ERRORS)
async def list_dead_letters(
    user: AdminUser,
    gw: GatewayDep,
    model: Annotated[str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeadLetterList:
    """Jobs that ran out of deliveries, newest first, each with the job's last error and the
    job that retried it, if any."""
    letters = list(reversed(await gw.deadletters.letters(model)))[:limit]
    data = []
    for letter in letters:
        record = await gw.jobs.record(letter.job_id)
        data.append(
            DeadLetterPublic(
                id=letter.job_id,
                job_id=letter.job_id,
                model=letter.model,
                owner=record.owner if record else None,
                deliveries=letter.deliveries,
                reason=letter.reason,
                dead_lettered_at=letter.occurred_at,
                error=record.error if record else None,
                replaced_by=record.replaced_by if record else None,
            )
        )
    return DeadLetterList(data=data)


@router.post(
    "/v1/dead-letters/{job_id}/retry",
    status_code=202,
    summary="Retry a dead-lettered job",
    responses=error_responses(401, 403, 404, 409, 429, 503),
)
async def retry_dead_letter(
    job_id: str, request: Request, user: AdminUser, gw: GatewayDep
) -> JobPublic:
    """A new job with the same request (`retry_of` names the dead one); the dead job's
    `replaced_by` then names the new one. 409 `already_retried` the second time."""
    record = await gw.deadletters.retry(job_id, request_id_of(request))
    return await gw.views.job(record, base=gw.base_url(request), principal=user)
