"""The floor under every hop: what one round trip between two processes costs on this machine,
back to back and after the pause that separates a job's hops (every process asleep meanwhile).

A job through Comfyline crosses more processes than a job sent straight to ComfyUI: the gateway,
NATS, the worker on the way in; the worker, NATS, the orchestrator, NATS again and the gateway
on the way out. Each crossing wakes a process that was asleep, and on a virtual machine that is
not free. Two round trips are timed, sides alternated pair by pair (a pause of ``pause_s``, one
round trip "after idle", then at once one "back to back"):

- a JetStream publish to a file-backed stream, answered with its ack (the client and NATS);
- a ``GET /system_stats`` of a ComfyUI server (the client and ComfyUI's HTTP server).

The difference of the two is the price of waking up, paid on every hop of a job's path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import nats
from nats.js.api import StorageType, StreamConfig

from .stats import summary

STREAM = "BENCH_HOPS"
SUBJECT = "bench.hops"
PAYLOAD = b"x" * 2048  # about what a job's report or work message weighs


async def _pairs(
    once: Callable[[], Awaitable[None]], rounds: int, pause_s: float
) -> tuple[list[float], list[float]]:
    """``rounds`` pairs of round trips: after ``pause_s`` asleep, then at once again (ms)."""
    idle: list[float] = []
    hot: list[float] = []
    for _ in range(3):  # connections, caches
        await once()
    for _ in range(rounds):
        await asyncio.sleep(pause_s)
        for side in (idle, hot):
            began = time.perf_counter()
            await once()
            side.append((time.perf_counter() - began) * 1000)
    return idle, hot


def _figures(idle: list[float], hot: list[float]) -> dict[str, Any]:
    after, back = summary(idle), summary(hot)
    return {
        "after_idle_ms": after,
        "back_to_back_ms": back,
        "wake_ms": after["median"] - back["median"],
    }


async def run(
    nats_url: str, comfyui_url: str, rounds: int, pause_s: float = 0.02
) -> dict[str, Any]:
    """The two round trips' figures (see the module)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name=STREAM, subjects=[SUBJECT], storage=StorageType.FILE, max_msgs=1000)
        )
        try:

            async def publish() -> None:
                await js.publish(SUBJECT, PAYLOAD)

            jetstream = _figures(*await _pairs(publish, rounds, pause_s))
        finally:
            await js.delete_stream(STREAM)
    finally:
        await nc.close()
    async with httpx.AsyncClient(base_url=comfyui_url, timeout=30) as http:

        async def stats() -> None:
            (await http.get("/system_stats")).raise_for_status()

        comfyui = _figures(*await _pairs(stats, rounds, pause_s))
    return {
        "rounds": rounds,
        "pause_s": pause_s,
        "jetstream_publish": jetstream,
        "comfyui_get": comfyui,
    }
