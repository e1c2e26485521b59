"""What the fleet can do right now: live workers (``workers`` bucket) and queue depth (``WORK``).

Availability of a model comes from the workers' heartbeats (which expire with the bucket's
TTL, so a dead worker disappears by itself). The backlog of a model is the number of messages
on ``work.<model>`` still in the work-queue stream, read for every model at once with one
``STREAM.INFO`` (subject filter ``work.>``). Both are cached for ``status_cache_s`` so a burst of
submissions does not turn into a burst of NATS requests.

The heartbeats come from the gateway's own watch of the bucket (:class:`FleetWatch`) once it has
read it (unless a caller asks for them fresh), not from a scan of the bucket per refresh (a
consumer made, every entry delivered, the consumer's end asked: about 3 ms on a 2-core
machine). A cache older than ``status_cache_s`` but
younger than ten times that is used as it is while it is read anew beside the request: a
submission every second or so (most web apps' traffic) never waits for the refresh, which cost
such a submission some 5 ms before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from comfyline.contracts import ModelTemplate, WorkerHeartbeat
from comfyline.runtime import Bus, FleetOrders

from .fleetwatch import FleetWatch
from .kv import nats_errors, scan

log = logging.getLogger(__name__)
#: A cache up to this many ``status_cache_s`` old is used while it is read anew beside.
STALE_FACTOR = 10


@dataclass(frozen=True, slots=True)
class ModelAvailability:
    """How ready one model is to run."""

    available: bool = False
    workers: int = 0
    servers: int = 0
    idle_servers: int = 0
    running: int = 0
    queue_depth: int = 0
    paused: bool = False
    reason: str | None = None
    missing: dict[str, list[str]] = field(default_factory=dict)
    #: Live servers have reported, and none of them can run the model.
    refused_by_fleet: bool = False


@dataclass(frozen=True, slots=True)
class ProviderAvailability:
    """A hosted provider as the provider workers see it."""

    available: bool = False
    workers: int = 0
    models: tuple[str, ...] = ()
    url: str | None = None


@dataclass(slots=True)
class _Cached:
    at: float = 0.0
    workers: list[WorkerHeartbeat] = field(default_factory=list)
    depth: dict[str, int] = field(default_factory=dict)
    lanes: dict[tuple[str, str], int] = field(default_factory=dict)


def _reason(
    available: bool,
    paused: bool,
    serving: list[WorkerHeartbeat],
    workers: list[WorkerHeartbeat],
    missing: dict[str, list[str]],
) -> str | None:
    """Why a model cannot run now, in words a user can act on (None when it can)."""
    if paused:
        return "paused by an admin: its jobs stay queued until it is resumed"
    if available:
        return None
    if not workers:
        return "no worker is live"
    if serving:
        return "every worker that serves it is draining or its servers are down"
    if missing:
        lacks = sorted({item for items in missing.values() for item in items})
        return "no live ComfyUI server can run it: missing " + ", ".join(lacks)
    return "no live worker serves it"


class Fleet:
    """Reads worker heartbeats and queue depths, briefly cached."""

    def __init__(
        self,
        bus: Bus,
        cache_s: float,
        orders: FleetOrders | None = None,
        watch: FleetWatch | None = None,
    ) -> None:
        self.bus = bus
        self.cache_s = cache_s
        self.orders = orders
        self.watch = watch
        self._cache = _Cached()
        self._reading: asyncio.Task[_Cached] | None = None

    async def stop(self) -> None:
        """Stop a refresh still running beside."""
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reading

    async def _refresh(self, force: bool = False) -> _Cached:
        age = time.monotonic() - self._cache.at
        if not force and self._cache.at and age < self.cache_s:
            return self._cache
        if not force and self._cache.at and age < self.cache_s * STALE_FACTOR:
            if self._reading is None or self._reading.done():
                self._reading = asyncio.create_task(self._read(), name="fleet refresh")
                self._reading.add_done_callback(_log_failure)
            return self._cache
        return await self._read(from_bucket=force)

    async def _read(self, from_bucket: bool = False) -> _Cached:
        """Read the queue depths, and take the heartbeats from the watch (from the bucket
        itself when ``from_bucket``: a caller asking for the fleet as it is now, such as an admin
        draining a worker whose first heartbeat the watch may not have heard yet)."""
        names = self.bus.names
        if not from_bucket and self.watch is not None and self.watch.ready:
            workers = self.watch.heartbeats()
        else:
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
        depth: dict[str, int] = {}
        lanes: dict[tuple[str, str], int] = {}
        for subject, count in (info.state.subjects or {}).items():
            model, lane = names.work_key(subject)
            depth[model] = depth.get(model, 0) + int(count)
            lanes[model, lane] = int(count)
        self._cache = _Cached(time.monotonic(), workers, depth, lanes)
        return self._cache

    async def queue_depth(self, model: str, fresh: bool = False, lane: str | None = None) -> int:
        """Jobs of ``model`` waiting in ``WORK``: in one lane, or in both (``lane`` None)."""
        cached = await self._refresh(force=fresh)
        if lane is None:
            return cached.depth.get(model, 0)
        return cached.lanes.get((model, lane), 0)

    async def queues(self) -> dict[tuple[str, str], tuple[int, float]]:
        """``(model, lane) -> (depth, age of its oldest message in seconds)``, read now: the
        autoscaling signal that ``/metrics`` exports."""
        cached = await self._refresh(force=True)
        stream = self.bus.names.stream("WORK")
        now = datetime.now(UTC)
        out: dict[tuple[str, str], tuple[int, float]] = {}
        for (model, lane), depth in cached.lanes.items():
            age = 0.0
            if depth:
                async with nats_errors("reading the oldest queued job"):
                    first = await self.bus.js.get_msg(
                        stream, seq=1, subject=self.bus.names.work(model, lane), next=True
                    )
                if first.time is not None:
                    age = max(0.0, (now - first.time).total_seconds())
            out[model, lane] = (depth, age)
        return out

    async def workers(self, fresh: bool = False) -> list[WorkerHeartbeat]:
        """Every live worker (``fresh``: read now, not from the cache)."""
        return list((await self._refresh(force=fresh)).workers)

    async def availability(self, models: list[str]) -> dict[str, ModelAvailability]:
        """Availability, capacity and backlog of each model."""
        cached = await self._refresh()
        out = {}
        comfy = [s for w in cached.workers for s in w.servers if s.healthy and s.provider is None]
        for model in models:
            serving = [w for w in cached.workers if model in w.models]
            # A draining worker finishes its jobs but takes no more: it is no capacity.
            taking = [s for w in serving if not w.draining for s in w.servers if s.healthy]
            paused = bool(self.orders and self.orders.paused(model))
            missing = {s.url: s.missing[model] for s in comfy if model in s.missing}
            refused = bool(comfy) and not serving and len(missing) == len(comfy)
            out[model] = ModelAvailability(
                available=bool(taking),
                workers=sum(1 for w in serving if not w.draining),
                servers=len(taking),
                idle_servers=sum(1 for s in taking if not s.busy),
                running=sum(1 for w in serving for s in w.servers if s.healthy and s.busy),
                queue_depth=cached.depth.get(model, 0),
                paused=paused,
                reason=_reason(bool(taking), paused, serving, cached.workers, missing),
                missing=missing,
                refused_by_fleet=refused,
            )
        return out

    async def for_templates(self, templates: list[ModelTemplate]) -> dict[str, ModelAvailability]:
        """Availability of each template; a pipeline is available when every step's model is
        (its capacity is its scarcest step's)."""
        step_models = {s.model for t in templates for s in t.steps}
        known = await self.availability(sorted({t.name for t in templates} | step_models))
        for template in templates:
            if template.engine != "pipeline":
                continue
            parts = [known[s.model] for s in template.steps]
            known[template.name] = ModelAvailability(
                available=all(p.available for p in parts),
                workers=min(p.workers for p in parts),
                servers=min(p.servers for p in parts),
                idle_servers=min(p.idle_servers for p in parts),
                running=0,
                queue_depth=0,
            )
        return known

    async def providers(self) -> dict[str, ProviderAvailability]:
        """Every hosted provider that a live provider worker reports, and whether it answers."""
        cached = await self._refresh()
        found: dict[str, list[tuple[WorkerHeartbeat, bool, list[str], str]]] = {}
        for worker in cached.workers:
            for server in worker.servers:
                if server.provider:
                    found.setdefault(server.provider, []).append(
                        (worker, server.healthy, server.models, server.url)
                    )
        return {
            name: ProviderAvailability(
                available=any(healthy for _, healthy, _, _ in seen),
                workers=len({w.worker_id for w, _, _, _ in seen}),
                models=tuple(sorted({m for _, _, models, _ in seen for m in models})),
                url=seen[0][3],
            )
            for name, seen in sorted(found.items())
        }


def _log_failure(task: asyncio.Task[_Cached]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("refreshing the fleet's state failed", exc_info=task.exception())
