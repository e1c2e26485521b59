"""The WebSocket side: who is connected under which clientId, and the ordered frame publisher.

It copies ComfyUI's `PromptServer` bookkeeping on purpose, hazards included:

- `sockets` maps a clientId to ONE socket; a second connection with the same clientId silently
  replaces the first, and when the first one closes later its cleanup pops the entry, so the new
  socket is forgotten too (docs/comfyui-protocol.md, "Reconnect hazard").
- Frames are queued from any thread with `send_sync` and sent in order by one publisher task; a
  frame for a clientId that is not connected is dropped, `sid=None` broadcasts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger("comfyui_sim.ws")

PREVIEW_IMAGE = 1
UNENCODED_PREVIEW_IMAGE = 2
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4

Message = tuple[str | int, Any, str | None]


def encode_binary(event_type: int, payload: bytes) -> bytes:
    """A binary frame: 4-byte big-endian event type, then the payload."""
    return struct.pack(">I", event_type) + payload


class WebSocketHub:
    """Connected sockets, their feature flags, and the publisher of every frame."""

    def __init__(
        self,
        queue_info: Callable[[], dict[str, Any]],
        server_features: dict[str, Any],
    ) -> None:
        self._queue_info = queue_info
        self._server_features = server_features
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.metadata: dict[str, dict[str, Any]] = {}
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self._transports: dict[int, asyncio.Transport] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._messages: asyncio.Queue[Message] | None = None
        self._publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._messages = asyncio.Queue()
        self._publisher = asyncio.create_task(self._publish_loop(), name="comfyui-sim-publisher")

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            await asyncio.gather(self._publisher, return_exceptions=True)
        for ws in list(self.sockets.values()):
            await ws.close(code=1001, message=b"server shutdown")

    def send_sync(self, event: str | int, data: Any, sid: str | None = None) -> None:
        """Queue a frame from any thread; JSON for a str event, binary for an int one."""
        loop, messages = self._loop, self._messages
        if loop is None or messages is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(messages.put_nowait, (event, data, sid))

    def broadcast_status(self) -> None:
        self.send_sync("status", {"status": self._queue_info()})

    def supports_preview_metadata(self, sid: str | None) -> bool:
        if sid is None:
            return False
        flags = self.metadata.get(sid, {}).get("feature_flags", {})
        return isinstance(flags, dict) and flags.get("supports_preview_metadata") is True

    def drop_all_sync(self) -> None:
        """Fault injection: abort every connection without a close frame, as a network drop."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._drop_all)

    def _drop_all(self) -> None:
        for transport in list(self._transports.values()):
            transport.abort()

    async def _publish_loop(self) -> None:
        assert self._messages is not None
        while True:
            event, data, sid = await self._messages.get()
            await self._send(event, data, sid)

    async def _send(self, event: str | int, data: Any, sid: str | None) -> None:
        if isinstance(event, int):
            await self._deliver(sid, lambda ws: ws.send_bytes(encode_binary(event, data)))
        else:
            message = {"type": event, "data": data}
            await self._deliver(sid, lambda ws: ws.send_json(message))

    async def _deliver(self, sid: str | None, send: Callable[[web.WebSocketResponse], Any]) -> None:
        if sid is None:
            targets = list(self.sockets.values())
        elif sid in self.sockets:
            targets = [self.sockets[sid]]
        else:
            return
        for ws in targets:
            try:
                await send(ws)
            except (ConnectionError, RuntimeError) as err:
                log.warning("send error: %s", err)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """`GET /ws?clientId=X`: register, greet with `status`, then read feature flags."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self.metadata[sid] = {"feature_flags": {}}
        if request.transport is not None:
            self._transports[id(ws)] = request.transport
        try:
            await ws.send_json(
                {"type": "status", "data": {"status": self._queue_info(), "sid": sid}}
            )
            if self.client_id == sid and self.last_node_id is not None:
                await ws.send_json({"type": "executing", "data": {"node": self.last_node_id}})
            first_message = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                    if first_message and data.get("type") == "feature_flags":
                        flags = data.get("data", {})
                        if sid in self.metadata:
                            self.metadata[sid]["feature_flags"] = flags
                        await ws.send_json(
                            {"type": "feature_flags", "data": dict(self._server_features)}
                        )
                    first_message = False
                except (ValueError, AttributeError) as exc:
                    log.warning("invalid message from client %s: %s", sid, exc)
        except (ConnectionError, RuntimeError) as exc:
            log.info("websocket %s ended: %s", sid, exc)
        finally:
            self.sockets.pop(sid, None)
            self.metadata.pop(sid, None)
            self._transports.pop(id(ws), None)
        return ws
