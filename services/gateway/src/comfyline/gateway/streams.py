"""Event streams that outlive their request: the answer starts inside the app, the body runs
outside it.

An SSE stream is checked like any request (authentication, the rate limit, the job's owner,
``Last-Event-ID``) by its route, through every middleware. But a response streamed where it
was made keeps the whole request stack alive for as long as the stream is open: each
middleware's frame, FastAPI's exit stacks, Starlette's task group and its two tasks. With
thousands of idle streams that is most of the gateway's memory per stream.

So an :class:`EventStreamResponse` sends its start (status and headers, which the middleware
completes: the request id, CORS, rate-limit headers) and then hands its body to
:func:`run_streaming`, the gateway app's outermost layer, which sends it once the request
stack has returned. What a stream holds while idle is then its generator and one task that
waits for the client to go away. Without that outer layer (the app mounted in another), the
response streams the body itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from comfyline.runtime import retrieve

#: Set in the scope by :func:`run_streaming`; an event stream's response puts itself there.
HANDOFF = "comfyline.stream_body"


class EventStreamResponse(Response):
    """``text/event-stream``: its body, an async iterator of chunks, is sent after the request
    stack has returned where :func:`run_streaming` runs the app."""

    media_type = "text/event-stream"

    def __init__(
        self,
        body: AsyncIterator[bytes],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body_iterator = body
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if HANDOFF in scope:
            scope[HANDOFF] = self
        else:
            await self.finish(receive, send)

    async def finish(self, receive: Receive, send: Send) -> None:
        """Send the body, then run the background task (FastAPI's, if a route added one)."""
        await send_body(self.body_iterator, receive, send)
        if self.background is not None:
            await self.background()


async def run_streaming(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``app`` for one request, then finish the event stream it handed over, if any."""
    if scope["type"] != "http":
        await app(scope, receive, send)
        return
    scope[HANDOFF] = None
    await app(scope, receive, send)
    stream = scope.pop(HANDOFF, None)
    if stream is not None:
        await stream.finish(receive, send)


async def send_body(body: AsyncIterator[bytes], receive: Receive, send: Send) -> None:
    """Send every chunk of ``body``, then the end; stop as soon as the client goes away, even
    while the body waits for its next chunk (a heartbeat may be many seconds off)."""
    streaming = asyncio.current_task()
    assert streaming is not None
    gone = asyncio.ensure_future(_disconnect(receive))
    sending = True

    def stop_sending(_: asyncio.Future[None]) -> None:
        if sending and not gone.cancelled():
            streaming.cancel()

    gone.add_done_callback(stop_sending)
    try:
        async for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not gone.done() or gone.cancelled():
            raise  # cancelled from outside: the server is stopping
        streaming.uncancel()  # the client went away: the stream is over
    finally:
        sending = False
        gone.cancel()
        gone.add_done_callback(retrieve)  # its failure (a server gone) says nothing more
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
