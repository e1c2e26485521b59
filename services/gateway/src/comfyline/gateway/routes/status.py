"""Health, readiness and the fleet's status."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from comfyline.contracts import ErrorCode
from comfyline.runtime.metrics import QUEUE_DEPTH, QUEUE_OLDEST_AGE, render

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

log = logging.getLogger(__name__)
router = APIRouter(tags=["status"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (no key: serve it on the internal network only, see the operations
    guide). The queue depth and oldest-job age per model are read from ``WORK`` now."""
    gw = getattr(request.app.state, "gateway", None)
    if gw is not None:
        try:
            async with asyncio.timeout(2):
                queues = await gw.fleet.queues()
        except Exception as exc:
            log.warning("metrics: the work queues could not be read", extra={"error": str(exc)})
            queues = None
        if queues is not None:
            QUEUE_DEPTH.clear()
            QUEUE_OLDEST_AGE.clear()
            for template in gw.registry:  # an empty queue reads 0, not "absent"
                for lane in ("interactive", "batch"):
                    QUEUE_DEPTH.labels(template.name, lane).set(0)
                    QUEUE_OLDEST_AGE.labels(template.name, lane).set(0)
            for (model, lane), (depth, age) in queues.items():
                QUEUE_DEPTH.labels(model, lane).set(depth)
                QUEUE_OLDEST_AGE.labels(model, lane).set(age)
    body, content_type = render()
    return Response(body, media_type=content_type)


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
