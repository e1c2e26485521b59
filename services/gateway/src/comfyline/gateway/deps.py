"""What routes receive: the gateway's collaborators and the caller, as ``Annotated`` aliases.

The lifespan (app.py, the composition root) builds one :class:`Gateway` and keeps it on
``app.state``; routes take what they need through these aliases::

    async def get_job(job_id: str, user: StatusUser, gw: GatewayDep) -> JobPublic: ...

``*User`` aliases authenticate and count the request against the owner's rate limit of that
route class; the ``RateLimit-*`` headers reach the response through the request context.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from comfyline.contracts import ErrorCode, Names
from comfyline.runtime import Bus, FleetOrders, LiveCatalogue, ObjectStore

from .auth import Authenticator, Principal
from .batches import Batches
from .deadletters import DeadLetterBook
from .errors import ApiError
from .fanout import Fanout
from .fleet import Fleet
from .fleetwatch import FleetWatch
from .inputs import InputResolver
from .joblog import JobLog
from .jobs import JobService
from .keys import KeyStore
from .limits import Limits, RouteClass
from .middleware import EXTRA_HEADERS
from .publish import Publisher
from .settings import Settings
from .submit import Submitter
from .views import Views


@dataclass
class Gateway:
    """Everything the routes use, built once per process by the lifespan."""

    settings: Settings
    names: Names
    bus: Bus
    store: ObjectStore
    http: httpx.AsyncClient
    registry: LiveCatalogue
    keys: KeyStore
    auth: Authenticator
    limits: Limits
    jobs: JobLog
    fleet: Fleet
    fanout: Fanout
    inputs: InputResolver
    submitter: Submitter
    views: Views
    orders: FleetOrders
    fleetwatch: FleetWatch
    deadletters: DeadLetterBook
    batches: Batches
    job_service: JobService
    publisher: Publisher

    async def readiness(self) -> tuple[bool, bool]:
        """Whether NATS (JetStream) and S3 answer, each within 2 s."""
        try:
            async with asyncio.timeout(2):
                await self.bus.js.account_info()
            nats_ok = self.bus.nc.is_connected
        except Exception:
            nats_ok = False
        try:
            async with asyncio.timeout(2):
                s3_ok = await self.store.ping()
        except TimeoutError:
            s3_ok = False
        return nats_ok, s3_ok

    def base_url(self, request: HTTPConnection) -> str:
        """The URL clients reach the API at (``public_url``, else the request's own)."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        return str(request.base_url).rstrip("/")


async def get_gateway(request: Request) -> Gateway:
    """The running gateway (503 while it starts).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread
    hop on every request for what is one attribute read.
    """
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is None:
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "the gateway is starting")
    assert isinstance(gateway, Gateway)
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (`cl_...`) or a JWT, as `Authorization: Bearer <token>`.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def current_user(request: Request, gw: GatewayDep, credentials: Credentials) -> Principal:
    """The authenticated caller (401 otherwise)."""
    token = credentials.credentials if credentials else None
    if token is None and request.headers.get("authorization"):
        raise ApiError(
            401,
            ErrorCode.UNAUTHORIZED,
            "use Authorization: Bearer <API key or JWT>",
            headers={"WWW-Authenticate": 'Bearer realm="api"'},
        )
    return await gw.auth.authenticate(token)


CurrentUser = Annotated[Principal, Depends(current_user)]


async def admin_user(user: CurrentUser) -> Principal:
    """The caller, who must be an admin (403 otherwise)."""
    if not user.is_admin:
        raise ApiError(403, ErrorCode.FORBIDDEN, "admins only")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]


async def charge(
    connection: HTTPConnection, gw: Gateway, user: Principal, route_class: RouteClass
) -> None:
    """Count one request of ``route_class`` for the caller; 429 when over the limit.

    The ``RateLimit-*`` headers go to the response through the request context.
    """
    decision = await gw.limits.rate(user, route_class)
    headers = decision.headers()
    connection.scope.setdefault("state", {}).setdefault(EXTRA_HEADERS, {}).update(headers)
    if not decision.allowed:
        raise ApiError(
            429,
            ErrorCode.RATE_LIMITED,
            f"rate limit of {decision.limit} {route_class} requests per "
            f"{decision.window_s}s reached",
            details={"route_class": route_class, "limit": decision.limit},
            headers=headers,
        )


def rate_limited(route_class: RouteClass) -> Callable[..., Awaitable[Principal]]:
    """A dependency: authenticate, then count one request of ``route_class``."""

    async def dependency(request: Request, user: CurrentUser, gw: GatewayDep) -> Principal:
        await charge(request, gw, user, route_class)
        return user

    dependency.__name__ = f"rate_limit_{route_class}"
    return dependency


async def caller(request: Request, gw: Gateway, route_class: RouteClass) -> Principal:
    """What a ``*User`` alias resolves to, for a handler that calls it directly (the
    submission's own, see routes/jobs.py): authenticate, then count one request."""
    user = await current_user(request, gw, await bearer_scheme(request))
    await charge(request, gw, user, route_class)
    return user


SubmitUser = Annotated[Principal, Depends(rate_limited("submit"))]
EnhanceUser = Annotated[Principal, Depends(rate_limited("enhance"))]
StatusUser = Annotated[Principal, Depends(rate_limited("status"))]
UploadUser = Annotated[Principal, Depends(rate_limited("upload"))]
KeysUser = Annotated[Principal, Depends(rate_limited("keys"))]


def owner_param(user: Principal, owner: str | None) -> str:
    """The owner id a request is about: the caller's own, or (admins only) any."""
    if owner is None or owner == user.owner_id:
        return user.owner_id
    if not user.is_admin:
        raise ApiError(403, ErrorCode.FORBIDDEN, "only admins may act for another owner")
    return owner
