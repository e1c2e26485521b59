"""Which models have a live worker, from the ``workers`` bucket's heartbeats.

Workers refresh their :class:`~comfyline.contracts.WorkerHeartbeat` every few seconds; the bucket's
TTL removes a dead worker's entry, but silently (no delete marker reaches a watcher), so each entry
here is counted live only for ``ttl_s`` after it was last seen. This is a cache of what KV says,
rebuilt from the bucket at start; it decides only whether a queued job is dispatched now or
re-checked shortly, never anything that must survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pydantic import ValidationError

from comfyline.contracts import WorkerHeartbeat
from comfyline.runtime import Bus, cancel_and_wait, follow_bucket

log = logging.getLogger(__name__)


class WorkerDirectory:
    """The live workers and the models they serve, kept current by watching ``workers``."""

    def __init__(self, bus: Bus, ttl_s: float = 15.0) -> None:
        self.bus = bus
        self.ttl_s = ttl_s
        self._seen: dict[str, tuple[frozenset[str], float]] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def live(self, model: str) -> bool:
        """True when some worker serving ``model`` heartbeated within the TTL."""
        horizon = time.monotonic() - self.ttl_s
        return any(model in models and seen >= horizon for models, seen in self._seen.values())

    def live_models(self) -> set[str]:
        """Every model with a live worker."""
        horizon = time.monotonic() - self.ttl_s
        return {m for models, seen in self._seen.values() if seen >= horizon for m in models}

    async def start(self, timeout_s: float = 5.0) -> None:
        """Start watching and wait (bounded) until the bucket's current entries are loaded."""
        self._task = asyncio.create_task(
            follow_bucket(self.bus, "workers", self._entry, self._ready.set)
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    def _entry(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._seen.pop(key, None)
            return
        try:
            beat = WorkerHeartbeat.from_bytes(value)
        except ValidationError:
            log.warning("unreadable worker heartbeat", extra={"key": key})
            return
        self._seen[key] = (frozenset(beat.models), time.monotonic())
        self._ready.set()
