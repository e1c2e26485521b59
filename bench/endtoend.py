"""(c) end-to-end jobs/s on zero-delay simulators, for 1, 2 and 4 workers (one server each).

Closed-loop clients submit with ``Prefer: wait`` until the job has succeeded (no download: the
figure is what Comfyline moves, not S3's serving); the baseline is the same clients straight to
the same servers (round-robin), sides alternated worker count by worker count. While the
Comfyline side runs, the CPU time each part uses (services, workers, NATS, S3, the servers) is
read from ``/proc``: CPU milliseconds per job, by part, say where a 2-core machine's time goes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from comfyline.comfyui_sim import SimulatorProcess

from .clients import (
    api_client,
    closed_loop,
    direct,
    direct_pool,
    fresh_color,
    smoke_input,
    submit,
    wait_job,
)
from .stack import BenchStack
from .stats import ratio


async def _rates(
    info: dict[str, Any],
    urls: list[str],
    jobs: int,
    clients: int,
    size: int,
    first: str,
    cpu: Callable[[], dict[str, float]],
) -> tuple[dict[str, float], dict[str, float]]:
    async def routed(n: int) -> None:
        await wait_job(api, await submit(api, "cpu-smoke", smoke_input(fresh_color(), size), True))

    async def straight(n: int) -> None:
        await direct(urls[n % len(urls)], plain, fresh_color(), size)

    rates: dict[str, float] = {}
    async with direct_pool() as plain, api_client(info) as api:
        for url in urls:  # warm-up: every server's encoders, then every path of Comfyline
            await direct(url, plain, fresh_color(), size)
        await closed_loop(routed, clients, clients)
        for side in [first, "direct" if first == "comfyline" else "comfyline"]:
            run = routed if side == "comfyline" else straight
            before = cpu()
            rates[side] = (await closed_loop(run, jobs, clients)).overall
            if side == "comfyline":
                after = cpu()
                per_job = {k: (after[k] - before.get(k, 0.0)) * 1000 / jobs for k in after}
    return rates, per_job


def run(
    stack: BenchStack,
    sims: list[SimulatorProcess],
    worker_counts: list[int],
    jobs: int,
    clients: int,
    size: int,
) -> dict[str, Any]:
    results: dict[str, Any] = {"clients": clients, "jobs": jobs, "image": f"{size}x{size}"}
    for n, workers in enumerate(worker_counts):
        urls = [sim.url for sim in sims[:workers]]
        stack.set_workers([[url] for url in urls])
        first = "comfyline" if n % 2 == 0 else "direct"
        cpu = functools.partial(stack.cpu_by_part, sims[:workers])
        rates, per_job = asyncio.run(_rates(stack.info, urls, jobs, clients, size, first, cpu))
        results[f"workers_{workers}"] = {
            "comfyline_jobs_per_s": rates["comfyline"],
            "direct_jobs_per_s": rates["direct"],
            "ratio": ratio(rates["comfyline"], rates["direct"]),
            "cpu_ms_per_job": dict(sorted(per_job.items(), key=lambda kv: -kv[1])),
        }
    return results
