"""Reading a whole KV bucket (or a part of it) at once, and following one as it changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Generic, TypeVar

from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue

from comfyline.contracts import BucketName

from .bus import Bus, BusError

log = logging.getLogger(__name__)
_GONE = ("DEL", "PURGE")
#: Called with a key and its value, or None when the key was deleted.
OnEntry = Callable[[str, bytes | None], None]


async def cas_pause(attempt: int) -> None:
    """Wait a little before compare-and-set attempt ``attempt + 1``: jittered, growing.

    Writers that lost a race spread out instead of colliding again at once.
    """
    await asyncio.sleep(random.uniform(0, 0.002 * attempt))


V = TypeVar("V")


class LastWrites(Generic[V]):
    """What this process last wrote under each key, with the revision the write got: the next
    change of that key can compare-and-set against it without reading first (a write by anyone
    else in between only costs the read it would have made anyway). Bounded: past ``kept``
    keys, all are forgotten at once (such keys change with the window or the day, so dropping
    them all is cheap)."""

    def __init__(self, kept: int = 10_000) -> None:
        self.kept = kept
        self._last: dict[str, tuple[V, int]] = {}

    def take(self, key: str) -> tuple[V, int] | None:
        """The last write of ``key`` and its revision, forgotten as it is handed out."""
        return self._last.pop(key, None)

    def remember(self, key: str, value: V, revision: int) -> None:
        if len(self._last) >= self.kept:
            self._last.clear()
        self._last[key] = (value, revision)


async def scan(kv: KeyValue, pattern: str, timeout_s: float = 5.0) -> list[tuple[str, bytes]]:
    """Every current ``(key, value)`` matching ``pattern`` (a KV wildcard), deletes left out.

    The bucket's stream first says how many keys match (``STREAM.INFO`` with a subject filter);
    one ordered consumer then delivers the last value of each, and the read ends once that many
    have arrived. (The watcher's own "no more values" marker cannot be trusted for this: nats.py
    sends it when the consumer has nothing pending, which is also true when every value has been
    sent but not yet handed to the watcher, so a busy process could read a full bucket as
    empty.) A key written meanwhile may or may not be in the result. Raises :class:`BusError` on
    failure or after ``timeout_s``.
    """
    stream, prefix, js = kv._stream, kv._pre, kv._js  # nats.py keeps them private
    try:
        expected = await _matching(js, stream, prefix, pattern)
        found: list[tuple[str, bytes]] = []
        if not expected:
            return found
        watcher = await kv.watch(pattern, ignore_deletes=False, inactive_threshold=30)
        try:
            seen = 0
            async with asyncio.timeout(timeout_s):
                async for entry in watcher:
                    if entry is None:
                        if not seen and not await _matching(js, stream, prefix, pattern):
                            break  # they expired in between
                        continue
                    seen += 1
                    if entry.operation not in _GONE and entry.value is not None:
                        found.append((entry.key, entry.value))
                    if seen >= expected or entry.delta == 0:  # delta: values still to come
                        break
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
    except (NatsError, JetStreamError, TimeoutError) as exc:
        raise BusError(f"cannot read {pattern} from the bucket: {exc}") from exc
    return found


async def _matching(js: JetStreamContext, stream: str, prefix: str, pattern: str) -> int:
    """How many keys of the bucket's stream match ``pattern`` (deleted ones' markers included)."""
    info = await js.stream_info(stream, subjects_filter=f"{prefix}{pattern}")
    return len(info.state.subjects or {})


async def follow_bucket(
    bus: Bus, bucket: BucketName, on_entry: OnEntry, on_ready: Callable[[], None]
) -> None:
    """Call ``on_entry`` for each current entry of ``bucket``, then for every change, forever.

    ``on_ready`` is called each time the current entries have all been seen (again after a
    re-watch: a failed watch is started over after a second). Cancel the task to stop.
    """
    while True:
        try:
            kv = await bus.kv(bus.names.bucket(bucket))
            watcher = await kv.watchall()
            try:
                async for entry in watcher:
                    if entry is None:
                        on_ready()
                        continue
                    gone = entry.operation in _GONE or not entry.value
                    on_entry(entry.key, None if gone else entry.value)
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("watching a bucket failed; watching again", extra={"bucket": bucket})
            await asyncio.sleep(1.0)
