"""The WebSocket to one ComfyUI: frames in, reconnects handled, each prompt's frames to its run.

Opened with a ``clientId`` of our choosing **before** a prompt is posted, because execution
frames go only to the socket of the prompt's ``client_id``. When the socket is lost it reconnects
with the same ``clientId``, closing the old socket first: ComfyUI forgets a clientId when an old
socket of that id closes, so a new socket opened while the old one lingers would later go deaf
(the documented reconnect hazard). Frames may be missed during the gap, so the run is told
(:class:`Reconnected`) and catches up over HTTP.

A worker keeps one socket per server open across its runs (:class:`ServerSocket`): a handshake
costs both sides about a millisecond of CPU, once per job if each run opened its own. Every
prompt on that server is posted with the socket's ``clientId``, and :meth:`ServerSocket.follow`
hands each run the frames of its own ``prompt_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from comfyline.runtime import cancel_and_wait

from .comfy_client import ComfyClient
from .errors import ComfyUnavailable
from .frames import Executing, Frame, parse

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


class Frames(Protocol):
    """What a run reads its prompt's frames from: its own socket or its share of one."""

    client_id: str

    async def next_event(self, timeout: float) -> Event | None: ...  # noqa: ASYNC109

    def notify(self, event: Event) -> None: ...


class _EventQueue:
    """Events waiting to be read, with a timeout on each read."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[Event] = asyncio.Queue()

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


class ComfySocket(_EventQueue):
    """``async with ComfySocket(...) as socket: event = await socket.next_event(timeout)``.

    With ``sink``, every event goes to it instead of this socket's own queue.
    """

    def __init__(
        self,
        client: ComfyClient,
        client_id: str,
        *,
        connect_timeout_s: float = 5.0,
        reconnect_budget_s: float = 5.0,
        previews: bool = False,
        sink: Callable[[Event], None] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.client_id = client_id
        self.url = client.ws_url(client_id)
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_budget_s = reconnect_budget_s
        self.previews = previews
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._put = sink or self._events.put_nowait
        self._reader: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        """Connected (or reconnecting) and reading frames."""
        return self._reader is not None and not self._reader.done()

    async def __aenter__(self) -> Self:
        if self._reader is not None:  # already open
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
                    self._put(parse(raw))
            except ConnectionClosed as exc:
                reason = f"closed: {exc}"
            self._put(SocketLost(reason))
            log.warning("ComfyUI socket lost, reconnecting", extra={"url": self.url, "why": reason})
            if not await self._reconnect():
                self._put(SocketDead(reason))
                return
            self.reconnects += 1
            self._put(Reconnected())

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


class PromptFeed(_EventQueue):
    """One prompt's frames, taken off its server's shared socket."""

    def __init__(self, client_id: str, prompt_id: str) -> None:
        super().__init__()
        self.client_id = client_id
        self.prompt_id = prompt_id


class FrameRouter:
    """Each prompt's frames to its feed, off one socket shared by the server's runs.

    Frames naming a prompt go to that prompt's feed; frames naming none (binary previews, the
    ``executing`` hint after a reconnect) to the prompt ComfyUI is executing, known from the
    last frame that named one (ComfyUI executes one prompt at a time, and one socket keeps the
    frames in order). Socket events (lost, reconnected, dead) go to every feed.
    """

    def __init__(self) -> None:
        self._feeds: dict[str, PromptFeed] = {}
        self._executing: str | None = None

    def add(self, feed: PromptFeed) -> None:
        """Route ``feed.prompt_id``'s frames to ``feed`` from now on."""
        self._feeds[feed.prompt_id] = feed

    def remove(self, feed: PromptFeed) -> None:
        """Stop routing to ``feed`` (its later frames are dropped)."""
        if self._feeds.get(feed.prompt_id) is feed:
            del self._feeds[feed.prompt_id]

    def reset(self) -> None:
        """A new socket: nothing is known to be executing."""
        self._executing = None

    def route(self, event: Event) -> None:
        """Hand ``event`` to the feed (or feeds) it belongs to; drop it if it has none."""
        if isinstance(event, SocketLost | Reconnected | SocketDead):
            for feed in list(self._feeds.values()):
                feed.notify(event)
            return
        prompt_id = getattr(event, "prompt_id", None)
        if prompt_id is None:
            prompt_id = self._executing
        elif isinstance(event, Executing) and event.node is None:
            self._executing = None  # its done marker: nothing executes until the next starts
        else:
            self._executing = prompt_id
        found = self._feeds.get(prompt_id) if prompt_id is not None else None
        if found is not None:
            found.notify(event)


class ServerSocket:
    """One server's socket, opened at its first run and kept open for the next ones; a socket
    that died is replaced, with a new clientId, at the next run. See :class:`FrameRouter`."""

    def __init__(self, client: ComfyClient, **options: Any) -> None:
        self.client = client
        self.options = options
        self.router = FrameRouter()
        self._socket: ComfySocket | None = None
        self._opening = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def follow(self, prompt_id: str) -> AsyncIterator[PromptFeed]:
        """The feed of ``prompt_id``'s frames, to be entered before the prompt is posted (with
        the feed's ``client_id``); raises :class:`ComfyUnavailable` if no socket opens."""
        socket = await self._open()
        feed = PromptFeed(socket.client_id, prompt_id)
        self.router.add(feed)
        try:
            yield feed
        finally:
            self.router.remove(feed)

    async def _open(self) -> ComfySocket:
        async with self._opening:
            socket = self._socket
            if socket is not None and socket.open:
                return socket
            if socket is not None:
                await socket.__aexit__(None, None, None)
            self._socket = None
            self.router.reset()
            socket = ComfySocket(
                self.client, str(uuid.uuid4()), sink=self.router.route, **self.options
            )
            await socket.__aenter__()
            self._socket = socket
            return socket

    async def close(self) -> None:
        """Close the socket (the worker stops)."""
        async with self._opening:
            socket, self._socket = self._socket, None
            if socket is not None:
                await socket.__aexit__(None, None, None)
