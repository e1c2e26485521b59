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

:class:`FilesLane` does the same for ``GET /v1/files/<token>``, the download that follows
most jobs (a fresh output's bytes behind a signed link): a link whose query is as the route
expects is answered by the route's own function inside the same stack; any other goes through
the whole app.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .deps import Gateway
from .links import FILES_PATH
from .middleware import has_lone_surrogate_escape, scope_header
from .routes.files import fresh_file_response
from .routes.jobs import SubmitRoute, parse_submission, takes_headers
from .schemas import JobCreate

App = Callable[[Scope, Receive, Send], Awaitable[None]]
PATH = "/v1/jobs"
#: Where the lane leaves the parsed job for the route's answer.
SUBMISSION = "comfyline.submission"
_FILES_PREFIX = FILES_PATH + "/"


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


class Lane:
    """One request's own way through the app: its answer inside the app's own middlewares and
    exception handlers, as FastAPI builds them, without the router (see the module)."""

    method = ""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        #: Requests answered this way (for tests and debugging).
        self.served = 0
        self._stack: ASGIApp | None = None

    def takes(self, scope: Scope) -> bool:
        """A request to try here: this lane's method and path on a running gateway."""
        return (
            scope["type"] == "http"
            and scope["method"] == self.method
            and self.matches(scope["path"])
            and not scope.get("root_path")
            and isinstance(getattr(self.app.state, "gateway", None), Gateway)
        )

    def matches(self, path: str) -> bool:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send, whole: App) -> None:
        """Answer the request, or hand it to ``whole`` (the app as a whole) unanswered."""
        raise NotImplementedError

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, name: str, taken: object
    ) -> None:
        """Answer through the stack, with what the lane took from the request in
        ``scope[name]`` for its answer."""
        scope["app"] = self.app
        scope[name] = taken
        self.served += 1
        await self._built()(scope, receive, send)

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
        raise NotImplementedError


class SubmitLane(Lane):
    """Answers the submissions it takes (:meth:`takes`) through the app's own middlewares
    and exception handlers around the route's answer; see the module."""

    method = "POST"

    def __init__(self, app: FastAPI, route: SubmitRoute, body_limit: int) -> None:
        super().__init__(app)
        self.route = route
        self.body_limit = body_limit

    def matches(self, path: str) -> bool:
        return path == PATH

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
        await self._serve(scope, again, send, SUBMISSION, job)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        job: JobCreate = scope.pop(SUBMISSION)
        request = Request(scope, receive, send)
        response = await self.route.answer(request, self.app.state.gateway, job)
        await response(scope, receive, send)


#: Where the files lane leaves the link's parts (token, expires, signature) for its answer.
LINK = "comfyline.link"
_EXPIRES = re.compile(r"[0-9]{1,12}")


class FilesLane(Lane):
    """Answers ``GET /v1/files/<token>?expires=&signature=`` through the app's own middlewares
    and exception handlers around the route's own function; a link whose query the route would
    refuse (or read otherwise) goes through the whole app."""

    method = "GET"

    def matches(self, path: str) -> bool:
        return path.startswith(_FILES_PREFIX) and "/" not in path[len(_FILES_PREFIX) :]

    async def __call__(self, scope: Scope, receive: Receive, send: Send, whole: App) -> None:
        token = scope["path"][len(_FILES_PREFIX) :]
        query: dict[str, str] = {}
        for name, value in parse_qsl(scope["query_string"].decode("latin-1"), True):
            if name in query:  # the same name twice: which one counts is the app's to say
                await whole(scope, receive, send)
                return
            query[name] = value
        expires, signature = query.get("expires"), query.get("signature")
        if (
            not token
            or expires is None
            or not _EXPIRES.fullmatch(expires)
            or signature is None
            or len(signature) > 64
        ):
            await whole(scope, receive, send)
            return
        await self._serve(scope, receive, send, LINK, (token, int(expires), signature))

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        token, expires, signature = scope.pop(LINK)
        response = await fresh_file_response(self.app.state.gateway, token, expires, signature)
        await response(scope, receive, send)
