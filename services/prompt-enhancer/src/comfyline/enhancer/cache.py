"""A small LRU cache with a time-to-live, and one computation per key at a time.

A regenerated job (same model, prompt and options) gets the enhancement it got before without
paying for the LLM again; two identical requests that arrive together share one computation. The
cache is per process: with several enhancers a repeat may land on another one and be computed
once more there, which costs time, never correctness.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    """Up to ``size`` entries, each kept for ``ttl_s`` seconds; least recently used goes first."""

    def __init__(
        self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[V]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        """The live value for ``key``, or None (an expired entry is removed)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> None:
        """Keep ``value`` for ``key``, evicting the least recently used entries beyond ``size``."""
        if self.size <= 0:
            return
        self._entries[key] = (self._clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    async def get_or_compute(
        self, key: Hashable, compute: Callable[[], Awaitable[tuple[V, bool]]]
    ) -> tuple[V, bool]:
        """The cached value, or ``compute()``'s, computed once however many ask at the same time.

        ``compute`` returns the value and whether it may be kept. Returns the value and whether
        it came from the cache (or from a computation another caller started).
        """
        cached = self.get(key)
        if cached is not None:
            self.hits += 1
            return cached, True
        pending = self._pending.get(key)
        if pending is not None:
            try:
                value = await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled, not the computation
                # The computation it waited for was cancelled with its caller: compute anew.
            else:
                self.hits += 1
                return value, True
        self.misses += 1
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            value, keep = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked as retrieved: nobody may be waiting for it
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(value)
        if keep:
            self.put(key, value)
        return value, False
