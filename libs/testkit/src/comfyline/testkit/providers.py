"""Fake hosted providers for tests, on loopback: an OpenAI-compatible images API and a queue API.

They answer in the real APIs' shapes (``data[].b64_json``; ``request_id`` / ``status_url`` /
``response_url`` / ``cancel_url`` and ``images[].url``), check the key, make real PNGs, and
can be told to fail: ``providers.fail_next(3, 429, retry_after=0.2)`` answers the next three API
calls with that status (and its ``Retry-After``) in the provider's error shape. Every API call is
recorded with its time, so a test can see how often and how fast the worker retried.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

KEY = "sk-test-provider-key"


def png(width: int, height: int, seed: str) -> bytes:
    """A real PNG of one colour chosen by ``seed``."""
    colour = hashlib.sha256(seed.encode()).digest()[:3]

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + colour * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


@dataclass
class Call:
    method: str
    path: str
    at: float
    status: int


@dataclass
class QueuedRequest:
    model: str
    body: dict[str, Any]
    polls: int = 0
    cancelled: bool = False


@dataclass
class FakeProviders:
    """Both fake APIs on one loopback server (``openai_url``, ``queue_url``)."""

    polls_to_finish: int = 3
    latency_s: float = 0.0
    size: int = 64
    calls: list[Call] = field(default_factory=list)
    requests: dict[str, QueuedRequest] = field(default_factory=dict)
    _failures: list[tuple[int, float | None]] = field(default_factory=list)
    url: str = ""

    @property
    def openai_url(self) -> str:
        return f"{self.url}/openai/v1"

    @property
    def queue_url(self) -> str:
        return f"{self.url}/queue"

    def fail_next(self, count: int, status: int, retry_after: float | None = None) -> None:
        """The next ``count`` API calls answer ``status`` (with ``Retry-After`` if given)."""
        self._failures.extend([(status, retry_after)] * count)

    def api_calls(self, prefix: str = "") -> list[Call]:
        return [c for c in self.calls if c.path.startswith(prefix) and "/files/" not in c.path]

    def _record(self, request: Request, status: int) -> None:
        self.calls.append(Call(request.method, request.url.path, time.monotonic(), status))

    async def _gate(self, request: Request, scheme: str, style: str) -> Response | None:
        """Auth, latency and injected failures, in the provider's error shape."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if request.headers.get("authorization") != f"{scheme} {KEY}":
            self._record(request, 401)
            return self._error(style, 401, "invalid api key", "invalid_api_key", None)
        if self._failures:
            status, after = self._failures.pop(0)
            self._record(request, status)
            message = "rate limit reached" if status == 429 else "the server had an error"
            code = "rate_limit_exceeded" if status == 429 else "server_error"
            return self._error(style, status, message, code, after)
        return None

    @staticmethod
    def _error(style: str, status: int, message: str, code: str, after: float | None) -> Response:
        headers = {"Retry-After": f"{after:g}"} if after is not None else {}
        if style == "openai":
            body: dict[str, Any] = {"error": {"message": message, "type": code, "code": code}}
        else:
            body = {"detail": message}
        return JSONResponse(body, status_code=status, headers=headers)

    # --- OpenAI-compatible images ------------------------------------------------------------
    async def images(self, request: Request) -> Response:
        refused = await self._gate(request, "Bearer", "openai")
        if refused is not None:
            return refused
        body = await request.json()
        prompt = str(body.get("prompt", ""))
        if not prompt or "model" not in body:
            self._record(request, 400)
            return self._error(
                "openai", 400, "prompt and model are required", "invalid_request", None
            )
        if "forbidden" in prompt:
            self._record(request, 400)
            return self._error(
                "openai", 400, "rejected by the safety system", "content_policy_violation", None
            )
        width, height = (int(v) for v in str(body.get("size", "1024x1024")).split("x"))
        scale = self.size / max(width, height)
        data = png(max(1, int(width * scale)), max(1, int(height * scale)), prompt)
        self._record(request, 200)
        item = {"b64_json": base64.b64encode(data).decode(), "revised_prompt": prompt}
        return JSONResponse({"created": int(time.time()), "data": [item]})

    # --- queue API -------------------------------------------------------------------------------
    async def submit(self, request: Request) -> Response:
        refused = await self._gate(request, "Key", "queue")
        if refused is not None:
            return refused
        model = request.path_params["model"]
        request_id = str(uuid.uuid4())
        self.requests[request_id] = QueuedRequest(model, await request.json())
        self._record(request, 200)
        base = f"{self.queue_url}/{model}/requests/{request_id}"
        return JSONResponse(
            {
                "request_id": request_id,
                "status_url": f"{base}/status",
                "response_url": base,
                "cancel_url": f"{base}/cancel",
            }
        )

    async def status(self, request: Request) -> Response:
        refused = await self._gate(request, "Key", "queue")
        if refused is not None:
            return refused
        queued = self.requests.get(request.path_params["request_id"])
        if queued is None:
            self._record(request, 404)
            return JSONResponse({"detail": "no such request"}, status_code=404)
        queued.polls += 1
        self._record(request, 200)
        if queued.cancelled:
            return JSONResponse({"status": "CANCELLED"})
        if queued.polls == 1:
            return JSONResponse({"status": "IN_QUEUE", "queue_position": 0})
        if queued.polls < self.polls_to_finish:
            return JSONResponse({"status": "IN_PROGRESS", "logs": []})
        return JSONResponse({"status": "COMPLETED"})

    async def result(self, request: Request) -> Response:
        refused = await self._gate(request, "Key", "queue")
        if refused is not None:
            return refused
        request_id = request.path_params["request_id"]
        queued = self.requests.get(request_id)
        self._record(request, 200 if queued else 404)
        if queued is None:
            return JSONResponse({"detail": "no such request"}, status_code=404)
        image = {
            "url": f"{self.url}/files/{request_id}.png",
            "width": self.size,
            "height": self.size,
            "content_type": "image/png",
        }
        return JSONResponse({"images": [image], "seed": queued.body.get("seed", 0)})

    async def cancel(self, request: Request) -> Response:
        queued = self.requests.get(request.path_params["request_id"])
        self._record(request, 202 if queued else 404)
        if queued is None:
            return JSONResponse({"detail": "no such request"}, status_code=404)
        queued.cancelled = True
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    async def file(self, request: Request) -> Response:
        request_id = request.path_params["name"].removesuffix(".png")
        queued = self.requests.get(request_id)
        self._record(request, 200 if queued else 404)
        if queued is None:
            return Response(status_code=404)
        data = png(self.size, self.size, str(queued.body.get("prompt", "")))
        return Response(data, media_type="image/png")

    async def root(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self.root),
                Route("/openai/v1", self.root),
                Route("/openai/v1/images/generations", self.images, methods=["POST"]),
                Route("/queue", self.root),
                Route("/queue/{model:path}/requests/{request_id}/status", self.status),
                Route(
                    "/queue/{model:path}/requests/{request_id}/cancel", self.cancel, methods=["PUT"]
                ),
                Route("/queue/{model:path}/requests/{request_id}", self.result),
                Route("/queue/{model:path}", self.submit, methods=["POST"]),
                Route("/files/{name}", self.file),
            ]
        )


@asynccontextmanager
async def serving(fake: FakeProviders) -> AsyncIterator[FakeProviders]:
    """Serve ``fake`` on a free loopback port in this event loop until the block ends."""
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(20):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
