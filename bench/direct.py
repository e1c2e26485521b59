"""The baseline: what a client pays talking to ComfyUI directly, with no Comfyline in between.

One job = POST /prompt on a WebSocket the client keeps open (as any serious integration does,
and as Comfyline's worker does), wait for the final ``executing {node: null}``, download every
output with /view. That is the least any caller of ComfyUI does. Each concurrent client has its
own socket (its own ``clientId``), opened before its first job and not counted.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection


class DirectClient:
    """One client of one ComfyUI: its socket, opened on first use, and its HTTP client."""

    def __init__(self, comfyui_url: str, http: httpx.AsyncClient) -> None:
        self.url = comfyui_url
        self.http = http
        self.client_id = uuid.uuid4().hex
        self.ws: ClientConnection | None = None

    async def run(self, graph: dict[str, Any]) -> float:
        """Run one graph and fetch its outputs; seconds from POST /prompt to the last byte."""
        if self.ws is None:
            ws_url = self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
            self.ws = await websockets.connect(ws_url, max_size=None, close_timeout=1)
        prompt_id = str(uuid.uuid4())
        started = time.perf_counter()
        outputs: list[dict[str, str]] = []
        posted = await self.http.post(
            f"{self.url}/prompt",
            json={"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id},
        )
        posted.raise_for_status()
        while True:
            raw = await self.ws.recv()
            if isinstance(raw, bytes):
                continue
            frame = json.loads(raw)
            data = frame.get("data", {})
            if data.get("prompt_id") != prompt_id:
                continue
            if frame["type"] == "executed":
                for files in data["output"].values():
                    outputs += [f for f in files if isinstance(f, dict) and "filename" in f]
            if frame["type"] == "execution_error":
                raise RuntimeError(data.get("exception_message"))
            if frame["type"] == "executing" and data.get("node") is None:
                break
        for file in outputs:
            view = await self.http.get(f"{self.url}/view", params=file)
            view.raise_for_status()
        return time.perf_counter() - started

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None


class DirectPool:
    """Direct clients shared by concurrent loops: each job borrows an idle client of its server
    (a new one when none is idle), so N concurrent loops end up with N sockets per server."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.idle: dict[str, list[DirectClient]] = {}
        self.every: list[DirectClient] = []

    async def run(self, comfyui_url: str, graph: dict[str, Any]) -> float:
        idle = self.idle.setdefault(comfyui_url, [])
        if idle:
            client = idle.pop()
        else:
            client = DirectClient(comfyui_url, self.http)
            self.every.append(client)
        try:
            return await client.run(graph)
        finally:
            idle.append(client)

    async def close(self) -> None:
        for client in self.every:
            await client.close()
