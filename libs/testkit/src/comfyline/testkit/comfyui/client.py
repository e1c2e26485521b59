"""A small ComfyUI protocol client for tests: HTTP calls and WebSocket frame recording.

It works against the simulator and a real ComfyUI alike (it is what the protocol suite in
tests/comfyui_protocol uses), and waits on events rather than sleeping: `Socket.wait_for`
returns as soon as a matching frame arrives, or fails after a bounded timeout.
"""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

DEFAULT_TIMEOUT = 15.0


@dataclass(frozen=True)
class ServerInfo:
    """What a test suite learned about the server under test."""

    url: str
    version: str
    simulator: bool
    classes: frozenset[str]
    data_dir: Path | None = None

    def missing(self, *classes: str) -> list[str]:
        """Node classes among `classes` that this server does not have."""
        return [name for name in classes if name not in self.classes]


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, content type (None when absent), raw body."""

    status: int
    content_type: str | None
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


@dataclass(frozen=True)
class Frame:
    """A WebSocket frame: JSON (`type`, `data`) or binary (`type` "binary", `event`, `payload`)."""

    type: str
    data: Any = None
    event: int | None = None
    payload: bytes = b""

    @property
    def binary(self) -> bool:
        return self.type == "binary"

    @property
    def prompt_id(self) -> Any:
        return self.data.get("prompt_id") if isinstance(self.data, dict) else None

    def preview(self) -> tuple[dict[str, Any] | None, int | None, bytes]:
        """Decode a preview: (metadata for type 4, image format for type 1, image bytes)."""
        if self.event == 4:
            size = struct.unpack(">I", self.payload[:4])[0]
            meta = json.loads(self.payload[4 : 4 + size])
            return meta, None, self.payload[4 + size :]
        if self.event == 1:
            return None, struct.unpack(">I", self.payload[:4])[0], self.payload[4:]
        raise ValueError(f"not a preview frame: {self.event}")

    def text_message(self) -> tuple[str, str]:
        """Decode a type 3 text frame: (node id, text)."""
        size = struct.unpack(">I", self.payload[:4])[0]
        node = self.payload[4 : 4 + size].decode()
        return node, self.payload[4 + size :].decode()


def is_done(prompt_id: str) -> Callable[[Frame], bool]:
    """The final marker of a run: `executing {node: null, prompt_id}`."""
    return lambda f: (
        f.type == "executing" and f.data.get("node") is None and f.prompt_id == prompt_id
    )


def of_type(kind: str, prompt_id: str | None = None) -> Callable[[Frame], bool]:
    return lambda f: f.type == kind and (prompt_id is None or f.prompt_id == prompt_id)


class Socket:
    """A WebSocket connection that records every frame it receives, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, client_id: str | None) -> None:
        self.ws = ws
        self.client_id = client_id
        self.frames: list[Frame] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    parsed = json.loads(msg.data)
                    frame = Frame(parsed.get("type"), parsed.get("data"))
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    data = bytes(msg.data)
                    frame = Frame(
                        "binary", event=struct.unpack(">I", data[:4])[0], payload=data[4:]
                    )
                else:
                    break
                async with self._changed:
                    self.frames.append(frame)
                    self._changed.notify_all()
        finally:
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def send_json(self, message: Any) -> None:
        await self.ws.send_json(message)

    async def wait_for(
        self, match: Callable[[Frame], bool], within: float = DEFAULT_TIMEOUT, start: int = 0
    ) -> Frame:
        """The first frame from index `start` on that matches, waiting up to `within` seconds."""
        async with asyncio.timeout(within):
            async with self._changed:
                while True:
                    for frame in self.frames[start:]:
                        if match(frame):
                            return frame
                    if self.closed.is_set():
                        raise ConnectionError("socket closed before the frame came")
                    await self._changed.wait()

    async def wait_count(self, count: int, within: float = DEFAULT_TIMEOUT) -> None:
        """Until at least `count` frames have arrived."""
        async with asyncio.timeout(within):
            async with self._changed:
                while len(self.frames) < count:
                    if self.closed.is_set():
                        raise ConnectionError("socket closed")
                    await self._changed.wait()

    async def wait_done(self, prompt_id: str, within: float = DEFAULT_TIMEOUT) -> list[Frame]:
        """Wait for the run's final marker; returns every frame received so far."""
        await self.wait_for(is_done(prompt_id), within)
        return list(self.frames)

    def run_frames(self, prompt_id: str) -> list[Frame]:
        """Frames that carry this prompt_id (JSON only)."""
        return [f for f in self.frames if f.prompt_id == prompt_id]

    def types(self, prompt_id: str | None = None) -> list[str]:
        frames = self.frames if prompt_id is None else self.run_frames(prompt_id)
        return [f.type for f in frames]

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)


class ComfyClient:
    """HTTP + WebSocket access to one ComfyUI (or simulator) at `url`."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        self.sockets: list[Socket] = []

    async def close(self) -> None:
        for socket in self.sockets:
            await socket.close()
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body)
            kwargs["headers"] = {"Content-Type": "application/json", **(headers or {})}
        elif data is not None:
            kwargs["data"] = data
        async with self.session.request(method, self.url + path, **kwargs) as answer:
            body = await answer.read()
            content_type = answer.headers.get("Content-Type")
            return Reply(answer.status, content_type, body, dict(answer.headers))

    async def get(self, path: str, **params: str) -> Reply:
        return await self.request("GET", path, params=params or None)

    async def get_json(self, path: str, **params: str) -> Any:
        reply = await self.get(path, **params)
        assert reply.status == 200, (path, reply.status, reply.text)
        return reply.json()

    async def post(self, path: str, body: Any = None) -> Reply:
        return await self.request("POST", path, json_body=body)

    async def prompt(
        self,
        graph: Any,
        client_id: str | None = None,
        prompt_id: str | None = None,
        **extra: Any,
    ) -> Reply:
        body: dict[str, Any] = {"prompt": graph, **extra}
        if client_id is not None:
            body["client_id"] = client_id
        if prompt_id is not None:
            body["prompt_id"] = prompt_id
        return await self.post("/prompt", body)

    async def submit(self, graph: Any, socket: Socket | None = None, **extra: Any) -> str:
        """POST a graph with a fresh prompt_id (and the socket's clientId); 200 is required."""
        prompt_id = str(uuid.uuid4())
        client_id = socket.client_id if socket is not None else None
        reply = await self.prompt(graph, client_id, prompt_id, **extra)
        assert reply.status == 200, reply.text
        return prompt_id

    async def connect(
        self, client_id: str | None = None, feature_flags: bool = False, wait: bool = True
    ) -> Socket:
        """Open `/ws?clientId=X` (a fresh clientId when None), optionally sending feature flags
        as the first message; with `wait`, returns once the greeting `status` frame arrived."""
        client_id = client_id or str(uuid.uuid4())
        ws = await self.session.ws_connect(f"{self.url}/ws", params={"clientId": client_id})
        if feature_flags:
            await ws.send_json(
                {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
            )
        socket = Socket(ws, client_id)
        self.sockets.append(socket)
        if wait:
            await socket.wait_for(of_type("status"))
        return socket

    async def wait_idle(self, within: float = DEFAULT_TIMEOUT) -> None:
        """Until nothing is pending or running: a fresh socket sees the status frame that
        reports `queue_remaining: 0` (or the queue is already empty)."""
        watcher = await self.connect()
        status = await self.get_json("/prompt")
        if status["exec_info"]["queue_remaining"] != 0:
            await watcher.wait_for(
                lambda f: (
                    f.type == "status" and f.data["status"]["exec_info"]["queue_remaining"] == 0
                ),
                within,
            )
        await watcher.close()
        self.sockets.remove(watcher)

    async def fetch(self, entry: Mapping[str, Any]) -> bytes:
        """Download an output reported as `{filename, subfolder, type}` through `/view`."""
        reply = await self.get(
            "/view", filename=entry["filename"], subfolder=entry["subfolder"], type=entry["type"]
        )
        if reply.status != 200:
            raise FileNotFoundError(f"/view answered {reply.status} for {dict(entry)}")
        return reply.body

    async def upload(
        self, name: str, content: bytes, content_type: str = "image/png", **fields: str
    ) -> Reply:
        form = aiohttp.FormData()
        form.add_field("image", content, filename=name, content_type=content_type)
        for key, value in fields.items():
            form.add_field(key, value)
        return await self.request("POST", "/upload/image", data=form)

    async def history(self, prompt_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.get_json(f"/history/{prompt_id}")
        return result

    async def run_ok(self, graph: Any, within: float = DEFAULT_TIMEOUT) -> list[Frame]:
        """Run on a fresh socket and require `execution_success`; returns the run's frames."""
        socket = await self.connect()
        _, frames = await self.run(graph, socket, within)
        if "execution_success" not in [f.type for f in frames]:
            errors = [f.data for f in frames if f.type.startswith("execution_")]
            raise RuntimeError(f"the run did not succeed: {errors}")
        return frames

    async def run(
        self, graph: Any, socket: Socket, within: float = DEFAULT_TIMEOUT, **extra: Any
    ) -> tuple[str, list[Frame]]:
        """Submit and wait for the final marker; returns the prompt_id and its frames."""
        start = len(socket.frames)
        prompt_id = await self.submit(graph, socket, **extra)
        await socket.wait_for(is_done(prompt_id), within, start)
        return prompt_id, [f for f in socket.frames[start:] if f.prompt_id == prompt_id]
