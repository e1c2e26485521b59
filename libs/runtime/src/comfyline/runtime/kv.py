"""Reading a whole KV bucket (or a part of it) at once."""

from __future__ import annotations

import asyncio
import random

from nats.errors import Error as NatsError
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue

from .bus import BusError


async def cas_pause(attempt: int) -> None:
    """Wait a little before compare-and-set attempt ``attempt + 1``: jittered, growing.

    Writers that lost a race spread out instead of colliding again at once.
    """
    await asyncio.sleep(random.uniform(0, 0.002 * attempt))


async def scan(kv: KeyValue, pattern: str, timeout_s: float = 5.0) -> list[tuple[str, bytes]]:
    """Every current ``(key, value)`` matching ``pattern`` (a KV wildcard), deletes left out.

    One ordered consumer delivers the last value of each matching key and stops at the end of
    the initial values, so this reads each key once. Raises :class:`BusError` on failure or
    after ``timeout_s``.
    """
    found: list[tuple[str, bytes]] = []
    try:
        watcher = await kv.watch(pattern, ignore_deletes=True, inactive_threshold=30)
        try:
            async with asyncio.timeout(timeout_s):
                async for entry in watcher:
                    if entry is None:
                        break
                    if entry.value is not None:
                        found.append((entry.key, entry.value))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
    except (NatsError, JetStreamError, TimeoutError) as exc:
        raise BusError(f"cannot read {pattern} from the bucket: {exc}") from exc
    return found
