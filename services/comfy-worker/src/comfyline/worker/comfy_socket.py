"""The WebSocket to one ComfyUI for one run: frames in, reconnects handled.

Opened with a ``clientId`` of our choosing **before** the prompt is posted, because execution
frames go only to the socket of the prompt's ``client_id``. When the socket is lost it reconnects
with the same ``clientId``, closing the old socket first: ComfyUI forgets a clientId when an old
socket of that id closes, so a new socket opened while the old one lingers would later go deaf
(the documented reconnect hazard). Frames may be missed during the gap, so the run is told
(:class:`Reconnected`) and catches up over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from comfyline.runtime import cancel_and_wait

from .comfy_client import ComfyClient
from .errors import ComfyUnavailable
from .frames import Frame, parse

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SocketLost:
    """The socket closed; a reconnect is being tried."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reconnected:
    """A new socket with the same clientId is open; frames of the gap may be missing."""


@dataclass(frozen=True, slots=True)
class SocketDead:
    """Reconnecting failed for the whole budget: ComfyUI is taken to be down."""

    reason: str


@dataclass(frozen=True, slots=True)
class Resolved:
    """A verdict from outside the frames (a pending prompt deleted, which sends no frame)."""

    kind: str


Event = Frame | SocketLost | Reconnected | SocketDead | Resolved
_FEATURES = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})


class ComfySocket:
    """``async with ComfySocket(...) as socket: event = await socket.next_event(timeout)``."""

    def __init__(
        self,
        client: ComfyClient,
        client_id: str,
        *,
        connect_timeout_s: float = 5.0,
        reconnect_budget_s: float = 5.0,
        previews: bool = False,
    ) -> None:
        self.client = client
        self.client_id = client_id
        self.url = client.ws_url(client_id)
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_budget_s = reconnect_budget_s
        self.previews = previews
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        """Connected (or reconnecting) and reading frames."""
        return self._reader is not None and not self._reader.done()

    async def __aenter__(self) -> Self:
        if self._reader is not None:  # opened ahead (a spare)
            return self
        try:
            self._ws = await self._connect()
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ComfyUnavailable(
                f"cannot open the WebSocket of {self.client.base_url}: {exc}"
            ) from exc
        self._reader = asyncio.create_task(self._read(), name=f"ws {self.url}")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader is not None:
            await cancel_and_wait([self._reader])
        await self._close()

    async def _connect(self) -> ClientConnection:
        ws = await websockets.connect(
            self.url,
            open_timeout=self.connect_timeout_s,
            close_timeout=1.0,
            ping_interval=20,
            ping_timeout=20,
            max_size=64 * 1024 * 1024,
            compression=None,
        )
        if self.previews:
            await ws.send(_FEATURES)
        return ws

    async def _close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._ws.close()
            self._ws = None

    async def _read(self) -> None:
        while True:
            assert self._ws is not None
            reason = "closed"
            try:
                async for raw in self._ws:
                    self._events.put_nowait(parse(raw))
            except ConnectionClosed as exc:
                reason = f"closed: {exc}"
            self._events.put_nowait(SocketLost(reason))
            log.warning("ComfyUI socket lost, reconnecting", extra={"url": self.url, "why": reason})
            if not await self._reconnect():
                self._events.put_nowait(SocketDead(reason))
                return
            self.reconnects += 1
            self._events.put_nowait(Reconnected())

    async def _reconnect(self) -> bool:
        # Close ours first: an old socket closing later would make ComfyUI forget the clientId.
        await self._close()
        deadline = time.monotonic() + self.reconnect_budget_s
        delay = 0.1
        while True:
            await asyncio.sleep(delay)
            try:
                self._ws = await self._connect()
                return True
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    log.warning("ComfyUI socket gone", extra={"url": self.url, "why": str(exc)})
                    return False
            delay = min(delay * 2, 1.0)

    def forget_earlier(self) -> None:
        """Drop the events heard so far."""
        while not self._events.empty():
            self._events.get_nowait()

    def notify(self, event: Event) -> None:
        """Put an outside verdict among the frames (the run reads both from one queue)."""
        self._events.put_nowait(event)

    async def next_event(self, timeout: float) -> Event | None:  # noqa: ASYNC109
        """The next frame or socket event, or None after ``timeout`` seconds of silence."""
        try:
            async with asyncio.timeout(timeout):  # unlike wait_for, never swallows a cancel
                return await self._events.get()
        except TimeoutError:
            return None


class SpareSocket:
    """A socket opened ahead of a server's next run, so that the run starts without waiting for
    the WebSocket handshake; the next spare opens while the run goes on. Frames a spare heard
    before its run took it (queue status broadcasts) are dropped: no prompt of its clientId
    existed yet."""

    def __init__(self, client: ComfyClient, **options: Any) -> None:
        self.client = client
        self.options = options
        self._next: asyncio.Task[ComfySocket | None] | None = None

    async def take(self) -> ComfySocket:
        """An open socket with a fresh clientId if the spare is ready (else one still to open
        with ``async with``), and the next spare on its way."""
        spare, self._next = self._next, asyncio.create_task(self._open(), name="spare socket")
        socket = await spare if spare is not None else None
        if socket is not None and socket.open:
            socket.forget_earlier()
            return socket
        if socket is not None:
            await socket.__aexit__(None, None, None)
        return self._new()

    def _new(self) -> ComfySocket:
        """A socket with a fresh clientId, not yet open."""
        return ComfySocket(self.client, str(uuid.uuid4()), **self.options)

    async def _open(self) -> ComfySocket | None:
        socket = self._new()
        try:
            return await socket.__aenter__()
        except ComfyUnavailable:
            return None

    async def close(self) -> None:
        """Close the spare (the worker stops)."""
        spare, self._next = self._next, None
        if spare is None:
            return
        spare.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            socket = await spare
            if socket is not None:
                await socket.__aexit__(None, None, None)
