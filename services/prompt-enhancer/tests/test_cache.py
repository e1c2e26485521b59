"""The LRU cache: size and TTL bounds, one computation per key at a time."""

from __future__ import annotations

import asyncio

import pytest

from comfyline.enhancer import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_least_recently_used_goes_first() -> None:
    cache: TtlCache[int] = TtlCache(size=2, ttl_s=60)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2


def test_entries_expire() -> None:
    clock = Clock()
    cache: TtlCache[int] = TtlCache(size=10, ttl_s=5, clock=clock)
    cache.put("a", 1)
    clock.now = 4.9
    assert cache.get("a") == 1
    clock.now = 5.0
    assert cache.get("a") is None
    assert len(cache) == 0


def test_size_zero_keeps_nothing() -> None:
    cache: TtlCache[int] = TtlCache(size=0, ttl_s=5)
    cache.put("a", 1)
    assert cache.get("a") is None


async def test_concurrent_requests_share_one_computation() -> None:
    cache: TtlCache[str] = TtlCache(size=10, ttl_s=60)
    calls = 0
    gate = asyncio.Event()

    async def compute() -> tuple[str, bool]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "value", True

    tasks = [asyncio.create_task(cache.get_or_compute("k", compute)) for _ in range(5)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert sorted(hit for _, hit in results) == [False, True, True, True, True]
    assert await cache.get_or_compute("k", compute) == ("value", True)
    assert calls == 1


async def test_a_result_marked_not_to_keep_is_computed_again() -> None:
    cache: TtlCache[int] = TtlCache(size=10, ttl_s=60)
    calls = 0

    async def compute() -> tuple[int, bool]:
        nonlocal calls
        calls += 1
        return calls, False

    assert await cache.get_or_compute("k", compute) == (1, False)
    assert await cache.get_or_compute("k", compute) == (2, False)


async def test_failures_reach_every_waiter_and_are_not_kept() -> None:
    cache: TtlCache[int] = TtlCache(size=10, ttl_s=60)
    gate = asyncio.Event()

    async def boom() -> tuple[int, bool]:
        await gate.wait()
        raise RuntimeError("boom")

    tasks = [asyncio.create_task(cache.get_or_compute("k", boom)) for _ in range(3)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert cache.get("k") is None


async def test_a_waiter_computes_itself_when_the_first_caller_is_cancelled() -> None:
    cache: TtlCache[int] = TtlCache(size=10, ttl_s=60)
    started = asyncio.Event()

    async def slow() -> tuple[int, bool]:
        started.set()
        await asyncio.sleep(10)
        return 1, True

    async def fast() -> tuple[int, bool]:
        return 2, True

    first = asyncio.create_task(cache.get_or_compute("k", slow))
    await started.wait()
    second = asyncio.create_task(cache.get_or_compute("k", fast))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, timeout=2) == (2, False)
