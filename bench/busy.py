"""(b) GPU busy: K servers whose job takes a fixed time, a backlog, one or more workers.

The backlog is submitted through the gateway while no worker runs, and the bench waits until
the orchestrator has queued every job; then the workers start. Each server's own execution log
(the simulator's ``GET /sim/executions``) gives when each prompt started and ended; from the
moment every server has started its first job to the moment the first server ends its last,
each had work waiting. The server also says when each prompt was queued: the part of a gap
before the next prompt reached its queue is time it had nothing to run (the dispatcher's), the
rest is the server's own (its thread starting a queued prompt late on a busy CPU). The image is
small (64x64), so a job is the 200 ms sleep and hardly any CPU: 16 servers on 2 cores stay
"GPUs" that wait, not processes that compete with Comfyline for the CPU.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import Names
from comfyline.runtime import Bus, NatsSettings

from .clients import api_client, fresh_color, smoke_input, submit, wait_job
from .stack import BenchStack
from .stats import Execution, backlog_window, busy_in, summary


def split(urls: list[str], workers: int) -> list[list[str]]:
    """Servers dealt to ``workers`` workers round-robin (no worker without a server)."""
    workers = max(1, min(workers, len(urls)))
    return [urls[n::workers] for n in range(workers)]


async def submit_backlog(info: dict[str, Any], jobs: int, size: int) -> list[dict[str, Any]]:
    async with api_client(info, connections=16) as api:
        gate = asyncio.Semaphore(16)

        async def one() -> dict[str, Any]:
            async with gate:
                return await submit(api, "cpu-smoke", smoke_input(fresh_color(), size), False)

        submitted = await asyncio.gather(*(one() for _ in range(jobs)))
    await wait_queued(info["nats_url"], jobs)
    return list(submitted)


async def wait_queued(nats_url: str, jobs: int, timeout_s: float = 120) -> None:
    """Until the WORK stream (a work queue) holds ``jobs`` messages."""
    names = Names()
    bus = await Bus.connect(NatsSettings(url=nats_url), names, "bench-busy")
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = await bus.js.stream_info(names.stream("WORK"))
            if info.state.messages >= jobs:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the orchestrator did not queue {jobs} jobs in {timeout_s} s")
    finally:
        await bus.close()


async def finish(
    info: dict[str, Any], jobs: list[dict[str, Any]], sims: list[SimulatorProcess], since: float
) -> list[list[Execution]]:
    async with api_client(info) as api:
        gate = asyncio.Semaphore(64)

        async def one(job: dict[str, Any]) -> None:
            async with gate:
                await wait_job(api, job)

        await asyncio.gather(*(one(job) for job in jobs))
    async with httpx.AsyncClient(timeout=30) as plain:
        logs = [(await plain.get(f"{sim.url}/sim/executions")).json() for sim in sims]
    return [
        [Execution.parse(raw) for raw in log["executions"] if raw["started"] >= since]
        for log in logs
    ]


def run_k(
    stack: BenchStack,
    sims: list[SimulatorProcess],
    workers: int,
    per_server: int,
    size: int,
) -> dict[str, Any]:
    info = stack.info
    stack.set_workers([])
    since = time.time()
    jobs = asyncio.run(submit_backlog(info, per_server * len(sims), size))
    stack.set_workers(split([s.url for s in sims], workers))
    servers = asyncio.run(finish(info, jobs, sims, since))
    start, end = backlog_window(servers)
    per = [busy_in(runs, start, end) for runs in servers]
    gaps_ms = [g * 1000 for server in per for g in server.gaps_s]
    busy = [server.busy_fraction for server in per]
    fed = [server.fed_fraction for server in per if server.fed_fraction is not None]
    unfed_ms = [g * 1000 for server in per for g in server.unfed_s or []]
    attributed: dict[str, Any] = {}
    if len(fed) == len(per):  # every server said when its prompts were queued
        attributed = {
            # Busy, or with a prompt waiting in its queue: what is left is time in which the
            # server had nothing to run (the rest of a gap is the server starting late).
            "fed_fraction": {"min": min(fed), "median": statistics.median(fed)},
            "idle_gap_unfed_ms": summary(unfed_ms),
        }
    return {
        "servers": len(sims),
        "workers": len(split([s.url for s in sims], workers)),
        "jobs": len(jobs),
        "window_s": end - start,
        "busy_fraction": {
            "min": min(busy),
            "median": statistics.median(busy),
            "per_server": busy,
        },
        "jobs_in_window_per_server": [server.jobs for server in per],
        "job_ms": summary([(r.ended - r.started) * 1000 for runs in servers for r in runs]),
        "idle_gap_ms": summary(gaps_ms),
        **attributed,
    }
