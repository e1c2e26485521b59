"""Live progress: SSE per job and per owner, and the same events over a WebSocket.

SSE: ``id:`` is the event's ``JOBS`` stream sequence, so a client that reconnects with
``Last-Event-ID`` gets exactly what it missed; ``event:`` is the SSE name from the one naming
table (``EVENT_NAMES``); ``data:`` the event with links made at send time; a comment line every
``sse_heartbeat_s``. A job's stream ends after its terminal event (and answers 204, which tells
EventSource to stop reconnecting, once a client has seen it). Browsers authenticate with the
short-lived ``?token=`` of the job's ``events`` link instead of a header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from pydantic import BaseModel

from comfyline.contracts import (
    EVENT_NAMES,
    ComfylineError,
    ErrorCode,
    JobEvent,
    WorkerEvent,
    owner_token,
)
from comfyline.runtime import cancel_and_wait
from comfyline.runtime.metrics import LISTENERS

from ..auth import Principal, bearer
from ..deps import Credentials, Gateway, GatewayDep, StatusUser, charge, owner_param
from ..errors import ApiError, error_responses
from ..fleetwatch import merged
from ..follow import Overflow, Tick, follow
from ..streams import EventStreamResponse

log = logging.getLogger(__name__)
router = APIRouter(tags=["events"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`id: <seq>`, `event: <type>`, `data: <JobEventPublic>` per event",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'retry: 2000\n\nid: 42\nevent: progress\ndata: {"job_id": '
                '"job_...", "seq": 42, "event": "progress", "status": "running", '
                '"progress": {"percent": 50}}\n\n',
            }
        },
    },
    204: {"description": "the job has ended and the client has seen its last event"},
}


class EventsToken(BaseModel):
    """A token that opens the caller's dashboard stream (``GET /v1/events?token=``)."""

    token: str
    expires_at: datetime
    url: str


async def events_principal(gw: Gateway, credentials: Any, token: str | None) -> Principal:
    """The caller of an event stream: a bearer header, or an events token in the query."""
    if credentials is not None:
        return await gw.auth.authenticate(credentials.credentials)
    if token:
        return gw.auth.verify_events_token(token)
    return await gw.auth.authenticate(None)


def last_event_id(header: str | None, query: int | None) -> int | None:
    """The sequence a client has seen (header first), or None."""
    if header is not None and header.strip():
        try:
            return max(0, int(header.strip()))
        except ValueError as exc:
            raise ApiError(
                400, ErrorCode.VALIDATION_ERROR, "Last-Event-ID must be an integer"
            ) from exc
    return query


def sse(seq: int, event: str, data: str) -> bytes:
    """One SSE event (the data is one line of JSON)."""
    return f"id: {seq}\nevent: {event}\ndata: {data}\n\n".encode()


async def _stream(
    gw: Gateway,
    base: str,
    *,
    job_id: str | None,
    owner: str | None,
    after: int | None,
    workers: bool = False,
) -> AsyncIterator[bytes]:
    with contextlib.ExitStack() as stack:
        stack.enter_context(LISTENERS.labels("sse").track_inprogress())
        # Listening before the first line is sent: a client that has read it misses nothing.
        fleet = stack.enter_context(gw.fleetwatch.listen()) if workers else None
        yield f"retry: {gw.settings.sse_retry_ms}\n\n".encode()
        jobs = follow(
            gw.jobs,
            gw.fanout,
            job_id=job_id,
            owner=owner,
            after=after,
            heartbeat_s=gw.settings.sse_heartbeat_s,
        )
        items = merged(jobs, fleet)
        async for chunk in _sse(gw, base, items):
            yield chunk


async def _sse(
    gw: Gateway, base: str, items: AsyncIterator[tuple[int, JobEvent] | Tick | WorkerEvent]
) -> AsyncIterator[bytes]:
    try:
        async for item in items:
            if isinstance(item, Tick):
                yield b": heartbeat\n\n"
                continue
            if isinstance(item, WorkerEvent):  # no id: Last-Event-ID stays a JOBS sequence
                yield f"event: worker\ndata: {item.model_dump_json()}\n\n".encode()
                continue
            seq, event = item
            view = gw.views.event(seq, event, base)
            yield sse(seq, view.event, view.model_dump_json(exclude_none=True))
    except Overflow:
        return  # the client reconnects with Last-Event-ID and misses nothing
    except ComfylineError as exc:
        log.warning("event stream ended", extra={"code": exc.code.value, "error": exc.message})


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="Follow one job (SSE)",
    response_class=EventStreamResponse,
    responses={**SSE_RESPONSES, **error_responses(400, 401, 403, 404, 429, 503)},
)
async def job_events(
    job_id: str,
    request: Request,
    gw: GatewayDep,
    credentials: Credentials,
    token: Annotated[
        str | None, Query(max_length=2048, description="the events link's token")
    ] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id_query: Annotated[int | None, Query(alias="last_event_id", ge=0)] = None,
) -> Response:
    """The job's events from the start (or after `Last-Event-ID`), then live, until it ends."""
    user = await events_principal(gw, credentials, token)
    if user.via == "events_token" and user.events_scope not in {job_id, "*"}:
        raise ApiError(403, ErrorCode.FORBIDDEN, "this events token is for another stream")
    await charge(request, gw, user, "status")
    record = await gw.job_service.load(user, job_id)
    after = last_event_id(last_event_id_header, last_event_id_query)
    if record.status.terminal and after is not None:
        if not await gw.job_service.has_events_after(job_id, after):
            return Response(status_code=204)
    return EventStreamResponse(
        _stream(gw, gw.base_url(request), job_id=job_id, owner=None, after=after),
        headers=SSE_HEADERS,
    )


@router.get(
    "/v1/events",
    summary="Follow all of the caller's jobs (SSE)",
    response_class=EventStreamResponse,
    responses={200: SSE_RESPONSES[200], **error_responses(400, 401, 403, 429, 503)},
)
async def owner_events(
    request: Request,
    gw: GatewayDep,
    credentials: Credentials,
    token: Annotated[str | None, Query(max_length=2048)] = None,
    owner: Annotated[str | None, Query(max_length=256, description="admins: any owner")] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id_query: Annotated[int | None, Query(alias="last_event_id", ge=0)] = None,
) -> EventStreamResponse:
    """Every event of every job of the caller, live (replayed from `Last-Event-ID` if given).

    Admins also get `event: worker` messages (no `id:`) when a worker joins, leaves, drains or
    resumes, or one of its ComfyUI servers goes down or comes back."""
    user = await events_principal(gw, credentials, token)
    if user.via == "events_token" and user.events_scope != "*":
        raise ApiError(403, ErrorCode.FORBIDDEN, "this events token is for one job's stream")
    await charge(request, gw, user, "status")
    who = owner_token(owner_param(user, owner))
    after = last_event_id(last_event_id_header, last_event_id_query)
    base = gw.base_url(request)
    return EventStreamResponse(
        _stream(gw, base, job_id=None, owner=who, after=after, workers=user.is_admin),
        headers=SSE_HEADERS,
    )


@router.post(
    "/v1/events/token",
    summary="Get a token for the dashboard stream",
    responses=error_responses(401, 429),
)
async def events_token(request: Request, user: StatusUser, gw: GatewayDep) -> EventsToken:
    """A short-lived token for `GET /v1/events?token=` (browsers' EventSource sends no headers)."""
    ttl = gw.settings.events_token_ttl_s
    token = gw.auth.issue_events_token(user, "*", ttl)
    return EventsToken(
        token=token,
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
        url=f"{gw.base_url(request)}/v1/events?token={token}",
    )


# --- WebSocket ---------------------------------------------------------------------------------
@router.websocket("/v1/ws")
async def websocket_events(
    websocket: WebSocket,
    token: str | None = None,
    job_id: str | None = None,
    last_event_id: int | None = None,
) -> None:
    """The caller's job events as ``job_update`` / ``step_update`` / ``job_completed`` /
    ``job_failed`` messages (``?job_id=`` for one job; ``?last_event_id=`` to resume).

    Authenticate with ``Authorization: Bearer`` on the handshake, ``?token=`` (an events token),
    or a first message ``{"type": "auth", "token": "<key or JWT>"}``.
    """
    gw: Gateway = websocket.app.state.gateway
    await websocket.accept()
    try:
        user = await _ws_principal(gw, websocket, token)
        await charge(websocket, gw, user, "status")
        if job_id is not None:
            if user.via == "events_token" and user.events_scope not in {job_id, "*"}:
                raise ApiError(403, ErrorCode.FORBIDDEN, "this events token is for another job")
            record = await gw.job_service.load(user, job_id)
            owner = None
        else:
            if user.via == "events_token" and user.events_scope != "*":
                raise ApiError(403, ErrorCode.FORBIDDEN, "this events token is for one job")
            record, owner = None, user.owner
    except ApiError as exc:
        await websocket.send_json({"type": "error", "code": exc.code.value, "error": exc.message})
        await websocket.close(code=4000 + exc.status)
        return
    await websocket.send_json({"type": "ready", "owner": user.owner_id, "job_id": job_id})
    base = gw.base_url(websocket)
    reader = asyncio.create_task(_ws_reader(websocket))
    listening = LISTENERS.labels("websocket")
    listening.inc()
    try:
        async for item in follow(
            gw.jobs,
            gw.fanout,
            job_id=record.id if record else None,
            owner=owner,
            after=last_event_id,
            heartbeat_s=gw.settings.sse_heartbeat_s,
        ):
            if reader.done():
                return
            if isinstance(item, Tick):
                await websocket.send_json({"type": "ping"})
                continue
            seq, event = item
            view = gw.views.event(seq, event, base)
            message = {
                "type": EVENT_NAMES[event.kind].ws,
                "event": view.event,
                "seq": seq,
                "job_id": event.job_id,
                "data": json.loads(view.model_dump_json(exclude_none=True)),
            }
            await websocket.send_json(message)
        await websocket.close(code=1000)
    except (WebSocketDisconnect, Overflow, RuntimeError):
        pass
    finally:
        listening.dec()
        await cancel_and_wait([reader])


async def _ws_principal(gw: Gateway, websocket: WebSocket, token: str | None) -> Principal:
    header = websocket.headers.get("authorization")
    if header:
        return await gw.auth.authenticate(bearer(header))
    if token:
        return gw.auth.verify_events_token(token)
    try:
        first = await asyncio.wait_for(websocket.receive_json(), 10)
    except (TimeoutError, ValueError, WebSocketDisconnect) as exc:
        raise ApiError(401, ErrorCode.UNAUTHORIZED, "authenticate first") from exc
    if not isinstance(first, dict) or first.get("type") != "auth":
        raise ApiError(401, ErrorCode.UNAUTHORIZED, 'send {"type": "auth", "token": ...} first')
    return await gw.auth.authenticate(str(first.get("token") or "") or None)


async def _ws_reader(websocket: WebSocket) -> None:
    """Answer pings; return when the client goes away."""
    while True:
        try:
            message = await websocket.receive_json()
        except (WebSocketDisconnect, RuntimeError):
            return
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("type") == "ping":
            await websocket.send_json({"type": "pong"})
