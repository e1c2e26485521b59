"""What the fleet can do right now: live workers (``workers`` bucket) and queue depth (``WORK``).

Availability of a model comes from the workers' heartbeats (which expire with the bucket's
TTL, so a dead worker disappears by itself). The backlog of a model is the number of messages
on ``work.<model>`` still in the work-queue stream, read for every model at once with one
``STREAM.INFO`` (subject filter ``work.>``). Both are cached for ``status_cache_s`` so a burst of
submissions does not turn into a burst of NATS requests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from comfyline.contracts import WorkerHeartbeat
from comfyline.runtime import Bus

from .kv import nats_errors, scan


@dataclass(frozen=True, slots=True)
class ModelAvailability:
    """How ready one model is to run."""

    available: bool = False
    workers: int = 0
    servers: int = 0
    idle_servers: int = 0
    running: int = 0
    queue_depth: int = 0


@dataclass(slots=True)
class _Cached:
    at: float = 0.0
    workers: list[WorkerHeartbeat] = field(default_factory=list)
    depth: dict[str, int] = field(default_factory=dict)


class Fleet:
    """Reads worker heartbeats and queue depths, briefly cached."""

    def __init__(self, bus: Bus, cache_s: float) -> None:
        self.bus = bus
        self.cache_s = cache_s
        self._cache = _Cached()

    async def _refresh(self, force: bool = False) -> _Cached:
        if not force and time.monotonic() - self._cache.at < self.cache_s and self._cache.at:
            return self._cache
        names = self.bus.names
        kv = await self.bus.kv(names.bucket("workers"))
        workers = []
        for _, raw in await scan(kv, ">"):
            try:
                workers.append(WorkerHeartbeat.from_bytes(raw))
            except ValueError:
                continue
        async with nats_errors("reading queue depth"):
            info = await self.bus.js.stream_info(
                names.stream("WORK"), subjects_filter=names.all_work()
            )
        prefix = names.all_work()[:-1]
        depth = {s.removeprefix(prefix): int(n) for s, n in (info.state.subjects or {}).items()}
        self._cache = _Cached(time.monotonic(), workers, depth)
        return self._cache

    async def queue_depth(self, model: str, fresh: bool = False) -> int:
        """Messages waiting on ``work.<model>``."""
        return (await self._refresh(force=fresh)).depth.get(model, 0)

    async def workers(self) -> list[WorkerHeartbeat]:
        """Every live worker."""
        return list((await self._refresh()).workers)

    async def availability(self, models: list[str]) -> dict[str, ModelAvailability]:
        """Availability, capacity and backlog of each model."""
        cached = await self._refresh()
        out = {}
        for model in models:
            serving = [w for w in cached.workers if model in w.models]
            servers = [s for w in serving for s in w.servers if s.healthy]
            out[model] = ModelAvailability(
                available=bool(servers),
                workers=len(serving),
                servers=len(servers),
                idle_servers=sum(1 for s in servers if not s.busy),
                running=sum(1 for s in servers if s.busy),
                queue_depth=cached.depth.get(model, 0),
            )
        return out
