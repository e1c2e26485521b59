"""The composition root: ``create_app(settings)`` builds the FastAPI app; its lifespan opens
NATS and S3, declares what the gateway uses, builds every collaborator once, and closes them.

The gateway keeps no state of its own: jobs live in JetStream and KV, limits in KV, files in S3,
so every replica answers the same and any number can run side by side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from starlette.types import Receive, Scope, Send

from comfyline.catalogue import Catalogue, example_input
from comfyline.contracts import bucket_spec, stream_spec
from comfyline.runtime import Bus, FleetOrders, FreshOutputs, LiveCatalogue, ObjectStore
from comfyline.runtime.tracing import exporting

from .auth import Authenticator
from .batches import Batches
from .deadletters import DeadLetterBook
from .deps import Gateway
from .errors import OPENAI_PATHS, install_error_handlers
from .fanout import Fanout
from .fleet import Fleet
from .fleetwatch import FleetWatch
from .inputs import InputResolver
from .joblog import JobLog
from .jobs import JobService
from .keys import KeyStore
from .lane import FilesLane, SubmitLane
from .limits import Limits
from .middleware import BodyLimitMiddleware, RequestContextMiddleware
from .publish import Publisher
from .routes import (
    admin,
    assets,
    batches,
    events,
    files,
    jobs,
    keys,
    models,
    openai,
    playground,
    prompts,
    status,
    usage,
    v2,
    v2_assets,
)
from .routes.jobs import SubmitRoute
from .schemas import JobEventPublic, WsMessage
from .settings import Settings
from .ssrf import Fetcher
from .streams import run_streaming
from .submit import Submitter
from .views import Views
from .workflows import FleetNodes, Workflows

STREAMS = ("JOBS", "WORK", "DEADLETTER")
BUCKETS = (
    "jobs",
    "workers",
    "models",
    "idempotency",
    "ratelimits",
    "keys",
    "usage",
    "fleet",
    "batches",
)
MULTIPART_OVERHEAD = 64 * 1024
EXPOSED_HEADERS = [
    "X-Request-ID",
    "Location",
    "Retry-After",
    "Idempotent-Replayed",
    "Preference-Applied",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
]
COMMON_ERRORS = {
    "400": "Malformed request",
    "401": "Missing or invalid credentials",
    "422": "Validation failed",
    "429": "Rate limited or over a limit",
    "503": "A dependency is unavailable",
}
DESCRIPTION = """
Run ComfyUI workflows (image, inpaint, portrait, speech, lip-sync, video) through one API.

* **Auth**: `Authorization: Bearer <API key or JWT>`. A job's `events` link carries its own
  short-lived token, so a browser's `EventSource` can follow it without the key.
* **Errors**: always `{"error", "code", "details", "request_id"}` with a stable `code`.
* **Limits**: `RateLimit-*` / `X-RateLimit-*` headers on limited routes; `429` with
  `Retry-After` when over; `503` with `Retry-After` when a model's queue is full.
* **Live progress**: `GET /v1/jobs/{id}/events` (SSE, resumable with `Last-Event-ID`),
  `GET /v1/events` (all your jobs), `WS /v1/ws`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open NATS and S3, build the gateway, serve, then close everything in reverse."""
    settings: Settings = app.state.settings
    names = settings.names
    async with AsyncExitStack() as stack:
        bus = await Bus.connect(settings.nats, names, "comfyline-gateway")
        stack.push_async_callback(bus.close)
        await bus.ensure_streams(stream_spec(names, s) for s in STREAMS)  # type: ignore[arg-type]
        await bus.ensure_buckets(bucket_spec(names, b) for b in BUCKETS)  # type: ignore[arg-type]
        store = ObjectStore(settings.s3)
        stack.push_async_callback(store.close)
        await store.ensure_bucket()
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.fetch_timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=50),
            follow_redirects=False,
        )
        stack.push_async_callback(http.aclose)
        keystore = KeyStore(await bus.kv(names.bucket("keys")))
        auth = Authenticator(settings.auth, keystore, settings.events_secret(), http)
        limits = Limits(
            settings.limits,
            await bus.kv(names.bucket("ratelimits")),
            await bus.kv(names.bucket("usage")),
        )
        joblog = JobLog(bus)
        orders = FleetOrders(bus)
        await orders.start()
        stack.push_async_callback(orders.stop)
        fanout = Fanout(bus)
        await fanout.start()
        stack.push_async_callback(fanout.stop)
        registry = LiveCatalogue(bus, Catalogue.builtin(), settings.models_refresh_s)
        await registry.start()
        stack.push_async_callback(registry.stop)
        inputs = InputResolver(
            store, joblog, Fetcher(http, settings.fetch_timeout_s), settings.bodies.max_fetch_bytes
        )
        fleetwatch = FleetWatch(bus, settings.worker_ttl_s)
        await fleetwatch.start()
        stack.push_async_callback(fleetwatch.stop)
        fleet = Fleet(bus, settings.status_cache_s, orders, fleetwatch)
        stack.push_async_callback(fleet.stop)
        workflows = Workflows(
            bus, registry, FleetNodes(fleet, store), settings.workflow_cost_per_gpu_second
        )
        submitter = Submitter(
            bus,
            settings,
            registry,
            joblog,
            fleet,
            limits,
            inputs,
            await bus.kv(names.bucket("idempotency")),
            workflows,
            orders=orders,
            fleetwatch=fleetwatch,
        )
        views = Views(store, auth, settings, FreshOutputs(bus))
        app.state.gateway = Gateway(
            settings=settings,
            names=names,
            bus=bus,
            store=store,
            http=http,
            registry=registry,
            keys=keystore,
            auth=auth,
            limits=limits,
            jobs=joblog,
            fleet=fleet,
            fanout=fanout,
            inputs=inputs,
            submitter=submitter,
            views=views,
            orders=orders,
            fleetwatch=fleetwatch,
            deadletters=DeadLetterBook(
                bus, joblog, submitter, await bus.kv(names.bucket("idempotency"))
            ),
            batches=Batches(
                submitter,
                joblog,
                fleet,
                limits,
                await bus.kv(names.bucket("batches")),
                settings.max_batch_jobs,
            ),
            job_service=JobService(
                bus, settings, store, joblog, fleet, fanout, submitter, views.output_links
            ),
            publisher=Publisher(bus, registry, workflows),
        )
        if app.state.on_started is not None:
            app.state.on_started()  # uvicorn serves nothing before the lifespan has started
        try:
            yield
        finally:
            app.state.gateway = None


def is_event_stream(scope: MutableMapping[str, Any]) -> bool:
    """A request that holds an event stream open (SSE or the WebSocket), not one answered."""
    path = str(scope.get("path", ""))
    return scope.get("type") == "websocket" or path.endswith("/events")


class GatewayApp(FastAPI):
    """The FastAPI app, whose event streams send their body once the request stack returned
    (see :mod:`.streams`), and whose submissions and fresh outputs' downloads take their own
    lanes when they are set (see :mod:`.lane`). ``FastAPIOffline`` is a function that makes a
    ``FastAPI``; the app it makes becomes this subclass, whose attributes of its own are the
    lanes."""

    submit_lane: SubmitLane | None = None
    files_lane: FilesLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for lane in (self.submit_lane, self.files_lane):
            if lane is not None and lane.takes(scope):
                await lane(scope, receive, send, self._whole)
                return
        await self._whole(scope, receive, send)

    async def _whole(self, scope: Scope, receive: Receive, send: Send) -> None:
        await run_streaming(super().__call__, scope, receive, send)


def create_app(settings: Settings, on_started: Callable[[], None] | None = None) -> FastAPI:
    """The gateway's ASGI app (routes, middleware, error envelope, OpenAPI); ``on_started``
    is called once its state is built, before the server takes requests."""
    traced = exporting()  # spans exported: FastAPI makes the request's, and no lane is taken
    # Swagger UI and ReDoc served from the package, not a CDN: /docs works offline too.
    app = FastAPIOffline(
        title="Comfyline API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,
        # One span per request (continuing a caller's ``traceparent``) and no more: the spans
        # FastAPI would add around each dependency, endpoint and serialization, and its metrics
        # and logs, cost each request CPU and say nothing the job's trace does not. None for an
        # event stream: a span as long as the stream says nothing and stays in memory with it.
        telemetry={
            "tracing": traced,  # (else the request context middleware sets its trace)
            "operation_spans": False,
            "metrics": False,
            "logs": False,
            "exclude": is_event_stream,
        },
        openapi_tags=[
            {"name": "jobs", "description": "Submit, list, read and cancel jobs; get outputs."},
            {"name": "batches", "description": "Many jobs submitted, followed, cancelled as one."},
            {"name": "events", "description": "Live progress: SSE and WebSocket."},
            {"name": "assets", "description": "Uploads and the gallery."},
            {"name": "models", "description": "The catalogue."},
            {"name": "prompts", "description": "Prompt enhancement previews."},
            {"name": "keys", "description": "API keys and the webhook secret."},
            {"name": "usage", "description": "Jobs, GPU seconds and cost."},
            {"name": "status", "description": "Health, readiness, fleet status."},
            {
                "name": "openai",
                "description": "OpenAI-compatible: images and speech for apps using its SDKs.",
            },
            {
                "name": "admin",
                "description": "Admins only: workers (drain, resume), model pauses, dead letters.",
            },
        ],
    )
    app.__class__ = GatewayApp
    app.state.settings = settings
    app.state.on_started = on_started
    app.state.gateway = None
    install_error_handlers(app)
    routers = (
        jobs,
        batches,
        events,
        assets,
        models,
        prompts,
        keys,
        usage,
        status,
        admin,
        openai,
        v2,
        v2_assets,
        files,
    )
    for module in (*routers, playground):
        app.include_router(module.router)

    upload_limit = settings.bodies.max_upload_bytes + MULTIPART_OVERHEAD
    json_limit = settings.bodies.max_json_bytes

    def limit_for(path: str) -> int:
        if path.rstrip("/") == "/v1/images/edits":  # an image and its mask
            return 2 * upload_limit
        uploads = {"/v1/assets", "/api/v2/assets"}
        return upload_limit if path.rstrip("/") in uploads else json_limit

    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    if settings.cors_origins or settings.cors_origin_regex:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_origin_regex=settings.cors_origin_regex,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "Prefer",
                "Last-Event-ID",
                "X-Request-ID",
            ],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware, trace_requests=not traced)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    assert isinstance(app, GatewayApp)
    if settings.submit_lane and not traced:
        route = next(r for r in jobs.router.routes if isinstance(r, SubmitRoute))
        app.submit_lane = SubmitLane(app, route, json_limit)
    if settings.files_lane and not traced:
        app.files_lane = FilesLane(app)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every 422 in our envelope instead of FastAPI's default shape."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    envelope = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    }
    openai_envelope = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OpenAIError"}}}
    }
    for route, path in schema.get("paths", {}).items():
        shape = openai_envelope if route in OPENAI_PATHS else envelope
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            response = responses.get("422")
            if response and "HTTPValidationError" in str(response):
                response.update(shape)
            if route in OPENAI_PATHS:
                for status, text in COMMON_ERRORS.items():
                    responses.setdefault(status, {"description": text, **shape})
            elif route.startswith("/v1/"):  # every API route can answer these
                for status, text in COMMON_ERRORS.items():
                    responses.setdefault(status, {"description": text, **envelope})
    submit = schema.get("paths", {}).get("/v1/jobs", {}).get("post")
    if submit is not None:  # one example per model of the catalogue, in Swagger UI's menu
        content = submit["requestBody"]["content"]["application/json"]
        content["examples"] = {
            t.name: {"summary": t.title, "value": {"model": t.name, "input": example_input(t)}}
            for t in Catalogue.builtin()
        }
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    # SSE data and WebSocket messages are not JSON responses: publish their schemas anyway.
    for model in (JobEventPublic, WsMessage):
        extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in extra.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault(model.__name__, extra)
    app.openapi_schema = schema
    return schema
