"""``POST /v1/jobs`` taken before the router: the busiest request's own way through the app.

A submission crosses FastAPI's whole request stack before its route's handler runs: the
telemetry and error layers, every middleware, the router's match across the app's routers and
the route's request wrapper. Measured on the gateway alone, that was about 0.25 ms of the 0.9
ms of CPU a submission took (a quarter of its throughput, and the same on every job's path).

:class:`SubmitLane` takes a submission that the route's own handler would answer (a JSON body
within its limit that is a valid job, headers within their limits, a running gateway, and a
process that exports no spans, where FastAPI makes none per request) and runs it through the
app's own middlewares and exception handlers, built in the same order as FastAPI builds them,
around the route's :meth:`~.routes.jobs.SubmitRoute.answer`. What it leaves out is what a
submission does not use: the router, FastAPI's telemetry (the request's trace context is set
by the request-context middleware instead) and its exit stacks (the handler solves no
dependencies). Any other request, and a submission it does not take, goes through the whole
app as before, with the body it read handed on unchanged; so every refusal stays FastAPI's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .deps import Gateway
from .middleware import has_lone_surrogate_escape, scope_header
from .routes.jobs import SubmitRoute, parse_submission, takes_headers
from .schemas import JobCreate

App = Callable[[Scope, Receive, Send], Awaitable[None]]
PATH = "/v1/jobs"
#: Where the lane leaves the parsed job for the route's answer.
SUBMISSION = "comfyline.submission"


def replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` that gives ``body`` first (already read), then what the client sends next
    (its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class SubmitLane:
    """Answers the submissions it takes (:meth:`takes`) through the app's own middlewares
    and exception handlers around the route's answer; see the module."""

    def __init__(self, app: FastAPI, route: SubmitRoute, body_limit: int) -> None:
        self.app = app
        self.route = route
        self.body_limit = body_limit
        #: Submissions answered this way (for tests and debugging).
        self.served = 0
        self._stack: ASGIApp | None = None

    def takes(self, scope: Scope) -> bool:
        """A submission to try here: ``POST /v1/jobs`` on a running gateway."""
        return (
            scope["type"] == "http"
            and scope["path"] == PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and isinstance(getattr(self.app.state, "gateway", None), Gateway)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send, whole: App) -> None:
        """Answer the submission, or hand it to ``whole`` (the app as a whole) unanswered."""
        length = scope_header(scope, b"content-length")
        limit = self.body_limit
        if self.app.max_body_size is not None:
            limit = min(limit, self.app.max_body_size)
        if (
            length is None  # (a chunked body: the middleware measures it as it comes)
            or not length.isdigit()
            or int(length) > limit
            or not takes_headers(
                scope_header(scope, b"content-type"), scope_header(scope, b"idempotency-key")
            )
        ):
            await whole(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body came: nothing to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        again = replaying(body, receive)
        job = None if has_lone_surrogate_escape(body) else parse_submission(body)
        if job is None:  # refused (or a lone surrogate to look at) as the app refuses it
            await whole(scope, again, send)
            return
        scope["app"] = self.app
        scope[SUBMISSION] = job
        self.served += 1
        await self._built()(scope, again, send)

    def _built(self) -> ASGIApp:
        """ServerErrorMiddleware, the app's middlewares, ExceptionMiddleware, the answer: as
        FastAPI builds its stack (the app's middleware list is final once it serves)."""
        if self._stack is None:
            app = self.app
            error_handler = None
            handlers: dict[Any, Any] = {}
            for key, value in app.exception_handlers.items():
                if key in (500, Exception):
                    error_handler = value
                else:
                    handlers[key] = value
            stack: ASGIApp = ExceptionMiddleware(self._answer, handlers=handlers, debug=app.debug)
            for cls, args, kwargs in reversed(app.user_middleware):
                stack = cls(stack, *args, **kwargs)
            self._stack = ServerErrorMiddleware(stack, handler=error_handler, debug=app.debug)
        return self._stack

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        job: JobCreate = scope.pop(SUBMISSION)
        request = Request(scope, receive, send)
        response = await self.route.answer(request, self.app.state.gateway, job)
        await response(scope, receive, send)
