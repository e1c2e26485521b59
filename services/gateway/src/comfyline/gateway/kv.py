"""Small helpers over NATS KV: typed reads, compare-and-set writes, and bounded scans.

Every call has a timeout and NATS failures become :class:`BusError` (503), so a route never
hangs on, or leaks, a NATS exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from nats.errors import Error as NatsError
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from comfyline.contracts import WireModel
from comfyline.runtime import BusError
from comfyline.runtime import scan as runtime_scan

M = TypeVar("M", bound=WireModel)


@asynccontextmanager
async def nats_errors(what: str) -> AsyncIterator[None]:
    """Translate NATS and timeout failures inside the block into :class:`BusError`.

    Answers that are outcomes, not failures, pass through for callers to handle: "not found" (a
    missing key or message) and a lost compare-and-set (``KeyWrongLastSequenceError``, another
    writer came first).
    """
    try:
        yield
    except (TimeoutError, NatsError, APIError) as exc:
        if isinstance(exc, NotFoundError | KeyWrongLastSequenceError):
            raise
        raise BusError(f"{what}: {type(exc).__name__}") from exc


async def get_model(kv: KeyValue, key: str, model: type[M]) -> tuple[M, int] | None:
    """The value under ``key`` parsed as ``model``, with its revision; None when missing."""
    try:
        async with nats_errors(f"reading {key}"):
            entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    if entry.value is None:
        return None
    return model.from_bytes(entry.value), int(entry.revision or 0)


async def scan(kv: KeyValue, pattern: str, timeout: float = 5.0) -> list[tuple[str, bytes]]:  # noqa: ASYNC109
    """Every current ``(key, value)`` matching ``pattern``, NATS failures answered as 503."""
    async with nats_errors(f"scanning {pattern}"):
        return await runtime_scan(kv, pattern, timeout)
