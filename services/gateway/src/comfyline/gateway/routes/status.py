"""Health, readiness and the fleet's status."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from comfyline.contracts import ErrorCode

from ..deps import Gateway, GatewayDep, StatusUser
from ..errors import error_response, error_responses
from ..schemas import (
    Availability,
    Health,
    ProviderPublic,
    Readiness,
    StatusPublic,
    WorkerPublic,
)

router = APIRouter(tags=["status"])


@router.get("/healthz", summary="Alive")
async def healthz() -> Health:
    """The process answers (no dependency is checked)."""
    return Health()


async def _fleet_notes(gw: Gateway) -> tuple[int | None, list[str]]:
    """The fleet's gaps, for the readiness body (never a reason to be unready)."""
    try:
        async with asyncio.timeout(2):
            workers = await gw.fleet.workers()
            templates = [t for t in gw.registry if t.engine == "comfyui"]
            available = await gw.fleet.for_templates(templates)
    except Exception:
        return None, ["the fleet could not be read"]
    if not workers:
        return 0, ["no worker is live: jobs are accepted and wait for one"]
    notes = [f"{name}: {a.reason}" for name, a in sorted(available.items()) if a.reason is not None]
    return len(workers), notes


@router.get("/readyz", summary="Ready", response_model=Readiness, responses=error_responses(503))
async def readyz(request: Request) -> Response:
    """NATS (JetStream) and S3 both answer (503 in the error envelope otherwise)."""
    gw = getattr(request.app.state, "gateway", None)
    nats_ok, s3_ok = await gw.readiness() if gw is not None else (False, False)
    if nats_ok and s3_ok and gw is not None:
        workers, notes = await _fleet_notes(gw)
        ready = Readiness(status="ready", nats=True, s3=True, workers=workers, notes=notes)
        return JSONResponse(ready.model_dump())
    return error_response(
        request,
        503,
        ErrorCode.SERVICE_UNAVAILABLE.value,
        "not ready",
        details={"nats": nats_ok, "s3": s3_ok},
    )


@router.get("/v1/status", summary="Fleet status", responses=error_responses(401, 429, 503))
async def status(user: StatusUser, gw: GatewayDep) -> StatusPublic:
    """Per-model availability and backlog, running jobs, live workers."""
    templates = list(gw.registry)
    names = [t.name for t in templates]
    workers = await gw.fleet.workers()
    extra = sorted({m for w in workers for m in w.models if m not in names})
    available = {**await gw.fleet.availability(extra), **await gw.fleet.for_templates(templates)}
    providers = await gw.fleet.providers()
    models = {
        name: Availability.model_validate(a, from_attributes=True) for name, a in available.items()
    }
    degraded = any(not a.available for a in models.values())
    return StatusPublic(
        status="degraded" if degraded else "ok",
        models=models,
        queue_depth=sum(a.queue_depth for a in models.values()),
        running=sum(1 for w in workers for s in w.servers if s.busy),
        workers=[
            WorkerPublic(
                worker_id=w.worker_id,
                models=w.models,
                servers=len(w.servers),
                busy=sum(1 for s in w.servers if s.busy),
                started_at=w.started_at,
                version=w.version,
            )
            for w in workers
        ],
        providers={
            name: ProviderPublic(available=p.available, workers=p.workers, models=list(p.models))
            for name, p in providers.items()
        },
    )
