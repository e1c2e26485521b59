"""Pure ASGI middleware: request ids, body size limits, and headers set by dependencies.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming responses (SSE, object content) pass
through untouched and nothing is buffered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from fastapi import HTTPException
from opentelemetry import context as otel_context
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comfyline.contracts import ErrorCode, new_request_id
from comfyline.runtime.tracing import request_context

from .errors import error_payload

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACE_HEADERS = (b"traceparent", b"tracestate")
#: Dependencies put headers here (e.g. ``RateLimit-*``); they are added to the response start.
EXTRA_HEADERS = "extra_headers"


class RequestContextMiddleware:
    """Give each request an id (``X-Request-ID`` in, or a new one) and add it to every answer.

    Also adds the headers dependencies left in ``scope["state"][EXTRA_HEADERS]``, so a header
    such as ``RateLimit-Remaining`` reaches streaming and redirect responses too.

    With ``trace_requests`` (a gateway that exports no spans, so FastAPI makes no span per
    request), each request runs in its caller's trace context, or a new unrecorded trace's:
    what it publishes carries that trace on, and its log lines show its id.
    """

    def __init__(self, app: ASGIApp, trace_requests: bool = False) -> None:
        self.app = app
        self.trace_requests = trace_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        if self.trace_requests:
            token = otel_context.attach(request_context(_trace_headers(scope)))
            try:
                await self._call(scope, receive, send)
            finally:
                otel_context.detach(token)
            return
        await self._call(scope, receive, send)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        given = scope_header(scope, b"x-request-id")
        rid = given if given and _REQUEST_ID.match(given) else new_request_id()
        state["request_id"] = rid
        state[EXTRA_HEADERS] = {}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                extra = {"x-request-id": rid, **state.get(EXTRA_HEADERS, {})}
                for name, value in extra.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), str(value).encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _trace_headers(scope: Scope) -> dict[str, str]:
    """The request's W3C trace headers (``traceparent``, ``tracestate``)."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name in _TRACE_HEADERS
    }


class BodyLimitMiddleware:
    """Refuse request bodies over a size (413 in the envelope), by header or while reading.

    ``limit_for(path)`` gives the limit of each path, so uploads may be larger than JSON.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = scope_header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(scope, send, limit)
            return
        received = 0
        is_json = "json" in (scope_header(scope, b"content-type") or "")
        chunks: list[bytes] = []

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise BodyTooLarge(limit)
                if is_json:
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        refuse_lone_surrogates(b"".join(chunks))
            return message

        await self.app(scope, limited_receive, send)


class UnencodableText(HTTPException):
    """A JSON string with a lone surrogate (``"\\ud800"``): text that has no UTF-8 form, so it
    can be neither stored nor sent on; refused as 422 before any route sees it."""

    def __init__(self, where: str) -> None:
        super().__init__(422, f"text at {where} has a lone surrogate (\\ud800-\\udfff)")


def has_lone_surrogate_escape(body: bytes) -> bool:
    """Whether a JSON body has a surrogate escape (``\\ud800`` to ``\\udfff``) to look at."""
    return _SURROGATE_ESCAPE.search(body) is not None


def refuse_lone_surrogates(body: bytes) -> None:
    """Raise :class:`UnencodableText` when a JSON body's strings cannot be encoded as UTF-8.

    Only bodies with a surrogate escape (``\\ud800`` to ``\\udfff``) are parsed here, so
    ordinary requests pay one scan of their bytes.
    """
    if not has_lone_surrogate_escape(body):
        return
    try:
        parsed = json.loads(body)
    except ValueError:
        return  # not JSON: the route's own parsing answers
    where = _lone_surrogate(parsed, "body")
    if where is not None:
        raise UnencodableText(where)


def _lone_surrogate(value: object, path: str) -> str | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _lone_surrogate(key, f"{path} (a key)") or _lone_surrogate(
                item, f"{path}.{key}"
            )
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}[{index}]")
            if found:
                return found
    return None


class BodyTooLarge(HTTPException):
    """Raised while reading a body past its limit (an HTTPException, so FastAPI's body reader
    lets it through instead of answering 400); the error handlers give it the envelope."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    rid = scope.get("state", {}).get("request_id") or new_request_id()
    body = json.dumps(
        error_payload(
            ErrorCode.PAYLOAD_TOO_LARGE.value,
            f"request body larger than {limit} bytes",
            rid,
            {"limit_bytes": limit},
        )
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def scope_header(scope: Scope, name: bytes) -> str | None:
    """A request header's value from the ASGI scope (``name`` in lower case), or None."""
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
