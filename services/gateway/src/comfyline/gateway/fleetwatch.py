"""Worker health as events for admins' dashboard streams (``GET /v1/events``).

Each gateway process watches the ``workers`` bucket and compares every heartbeat with the one
before it: a new worker has ``worker_joined``; a server that stops or starts answering,
``server_down`` / ``server_up``; a worker that starts or stops draining, ``worker_draining`` /
``worker_resumed``; a worker that deletes its entry (a clean stop) or whose heartbeat is older
than the bucket's TTL (a crash: the TTL removes entries silently), ``worker_left``. The entries
present when the watch starts are the baseline, not changes. Events go to the listeners of this
process only, through bounded queues (a slow listener loses events, never blocks the watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

from pydantic import ValidationError

from comfyline.contracts import WorkerEvent, WorkerEventKind, WorkerHeartbeat, utcnow
from comfyline.runtime import Bus, cancel_and_wait, follow_bucket

from .mailbox import Mailbox

log = logging.getLogger(__name__)
T = TypeVar("T")
U = TypeVar("U")


class FleetWatch:
    """Diffs worker heartbeats into :class:`WorkerEvent` and fans them out in memory."""

    def __init__(self, bus: Bus, ttl_s: float = 15.0, check_s: float = 1.0) -> None:
        self.bus = bus
        self.ttl_s = ttl_s
        self.check_s = check_s
        self._last: dict[str, tuple[WorkerHeartbeat, float]] = {}
        self._listeners: set[Mailbox[WorkerEvent]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Start watching heartbeats and expiring silent workers."""
        self._ready = asyncio.Event()
        watch = follow_bucket(self.bus, "workers", self._entry, self._ready.set)
        self._tasks = [
            asyncio.create_task(watch, name="fleet watch"),
            asyncio.create_task(self._expire(), name="fleet expiry"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._ready.wait()

    async def stop(self) -> None:
        """Stop watching."""
        await cancel_and_wait(self._tasks)
        self._tasks = []

    @property
    def ready(self) -> bool:
        """The bucket's entries have been read once: :meth:`heartbeats` is the fleet."""
        return self._ready.is_set() and bool(self._tasks) and not self._tasks[0].done()

    def heartbeats(self) -> list[WorkerHeartbeat]:
        """The last heartbeat of every worker heard from within the TTL."""
        horizon = time.monotonic() - self.ttl_s
        return [beat for beat, seen in self._last.values() if seen >= horizon]

    def live(self, model: str) -> bool:
        """True when a worker serving ``model``, not draining, heartbeated within the TTL."""
        horizon = time.monotonic() - self.ttl_s
        return any(
            model in beat.models and not beat.draining and seen >= horizon
            for beat, seen in self._last.values()
        )

    @contextlib.contextmanager
    def listen(self) -> Iterator[Mailbox[WorkerEvent]]:
        """A queue receiving every worker event while inside."""
        queue: Mailbox[WorkerEvent] = Mailbox(256)
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)

    def _emit(self, kind: WorkerEventKind, worker_id: str, **fields: str | None) -> None:
        event = WorkerEvent(kind=kind, worker_id=worker_id, occurred_at=utcnow(), **fields)
        log.info("worker event", extra={"kind": kind, "worker_id": worker_id})
        for queue in self._listeners:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

    def observe(self, key: str, beat: WorkerHeartbeat | None, baseline: bool = False) -> None:
        """Compare a worker's new heartbeat (None: its entry was deleted) with its last one."""
        before = self._last.get(key)
        if beat is None:
            if self._last.pop(key, None) is not None and not baseline:
                self._emit("worker_left", key, detail="stopped")
            return
        self._last[key] = (beat, time.monotonic())
        if baseline:
            return
        if before is None:
            self._emit("worker_joined", key, detail=", ".join(beat.models))
            return
        old = before[0]
        if beat.draining != old.draining:
            self._emit("worker_draining" if beat.draining else "worker_resumed", key)
        was = {s.url: s.healthy for s in old.servers}
        for server in beat.servers:
            if server.url in was and was[server.url] != server.healthy:
                kind: WorkerEventKind = "server_up" if server.healthy else "server_down"
                self._emit(kind, key, server=server.url)

    def _entry(self, key: str, value: bytes | None) -> None:
        try:
            beat = None if value is None else WorkerHeartbeat.from_bytes(value)
        except ValidationError:
            return
        self.observe(key, beat, baseline=not self._ready.is_set())

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            horizon = time.monotonic() - self.ttl_s
            for key, (_, seen) in list(self._last.items()):
                if seen < horizon:
                    del self._last[key]
                    self._emit("worker_left", key, detail="heartbeat lost")


async def merged(source: AsyncIterator[T], queue: Mailbox[U] | None) -> AsyncIterator[T | U]:
    """Items of ``source`` and of ``queue`` as they come; ends when ``source`` ends."""
    if queue is None:
        async for item in source:
            yield item
        return
    items = source.__aiter__()
    next_item: asyncio.Future[T] = asyncio.ensure_future(items.__anext__())
    next_event: asyncio.Future[U] = asyncio.ensure_future(queue.get())
    try:
        while True:
            waiting: set[asyncio.Future[T] | asyncio.Future[U]] = {next_item, next_event}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if next_event in done:
                yield next_event.result()
                next_event = asyncio.ensure_future(queue.get())
            if next_item in done:
                try:
                    item = next_item.result()
                except StopAsyncIteration:
                    return
                yield item
                next_item = asyncio.ensure_future(items.__anext__())
    finally:
        await cancel_and_wait([next_item, next_event])
        closer = getattr(items, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
