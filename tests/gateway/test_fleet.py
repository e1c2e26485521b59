"""The gateway's view of the fleet: heartbeats from its own watch of the ``workers`` bucket, and a
cache a little past its age used while it is read anew beside the request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from comfyline.gateway import fleet as fleet_module
from comfyline.gateway.fleet import STALE_FACTOR, Fleet
from comfyline.gateway.fleetwatch import FleetWatch
from comfyline.runtime import Bus
from comfyline.testkit.orchestrator import until

from .test_admin import beat

CACHE_S = 0.2


@pytest.fixture
async def watch(bus: Bus) -> AsyncIterator[FleetWatch]:
    await bus.kv(bus.names.bucket("workers"))
    watching = FleetWatch(bus, ttl_s=30)
    await watching.start()
    try:
        yield watching
    finally:
        await watching.stop()


async def no_scan(*args: Any) -> Any:
    raise AssertionError("the workers bucket was scanned although the watch holds it")


async def test_heartbeats_come_from_the_watch_not_a_scan_per_refresh(
    bus: Bus, watch: FleetWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = Fleet(bus, cache_s=0, watch=watch)
    await beat(bus, "gpu-1")
    await until(lambda: len(watch.heartbeats()) == 1)
    monkeypatch.setattr(fleet_module, "scan", no_scan)
    assert [w.worker_id for w in await fleet.workers()] == ["gpu-1"]
    assert (await fleet.availability(["cpu-smoke"]))["cpu-smoke"].available


async def test_a_fresh_view_reads_the_bucket_itself(bus: Bus, watch: FleetWatch) -> None:
    """An admin draining a worker right after its first heartbeat: the watch may not have heard
    it yet, the bucket has it."""
    fleet = Fleet(bus, cache_s=0, watch=watch)
    await beat(bus, "gpu-3")
    await until(lambda: len(watch.heartbeats()) == 1)
    watch._last.clear()  # as if its entry had not reached the watch yet
    assert [w.worker_id for w in await fleet.workers(fresh=True)] == ["gpu-3"]
    assert await fleet.workers() == []


async def test_without_a_watch_the_bucket_is_scanned(bus: Bus) -> None:
    await beat(bus, "gpu-2")
    assert [w.worker_id for w in await Fleet(bus, cache_s=0).workers()] == ["gpu-2"]


async def test_a_cache_past_its_age_answers_at_once_and_is_read_anew_beside(
    bus: Bus, watch: FleetWatch
) -> None:
    fleet = Fleet(bus, cache_s=CACHE_S, watch=watch)
    try:
        assert await fleet.queue_depth("cpu-smoke") == 0
        for n in range(3):
            await bus.js.publish(bus.names.work("cpu-smoke"), f"job {n}".encode())
        assert await fleet.queue_depth("cpu-smoke") == 0  # within its age: the cache
        await asyncio.sleep(CACHE_S * 1.5)
        # Past its age but not STALE_FACTOR times it: answered from the cache, read beside.
        assert await fleet.queue_depth("cpu-smoke") == 0
        await until(lambda: fleet._cache.depth.get("cpu-smoke") == 3)
        assert await fleet.queue_depth("cpu-smoke") == 3
        await bus.js.publish(bus.names.work("cpu-smoke"), b"job 3")
        await asyncio.sleep(CACHE_S * STALE_FACTOR)
        # Too old to answer with: read before answering.
        assert await fleet.queue_depth("cpu-smoke") == 4
        assert await fleet.queue_depth("cpu-smoke", fresh=True) == 4
    finally:
        await fleet.stop()
