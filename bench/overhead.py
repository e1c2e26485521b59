"""(a) sequential overhead and (c) 8-client throughput, direct vs Comfyline, sides alternated.

Sequential: job n runs direct then through Comfyline when n is even, the other way round when
odd, so both sides see the same machine at the same moment; the difference of each pair is
reported as well as each side. Throughput: rounds of ``clients`` closed-loop clients, direct and
Comfyline alternating round by round (ABBA...), the median round of each side compared, both
in the steady state (every client with a job in flight) and over the whole round.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from .clients import Rate, api_client, closed_loop, direct, direct_pool, fresh_color, via_comfyline
from .stats import ratio, summary


async def sequential(
    info: dict[str, Any], comfyui_url: str, jobs: int, size: int, pause_s: float = 0.0
) -> dict[str, Any]:
    """``jobs`` pairs, back to back, or ``pause_s`` apart (a lightly loaded stack: every part
    idles between jobs, as it does for most web apps most of the time)."""
    async with direct_pool() as plain, api_client(info) as api:
        for _ in range(3):  # warm both paths (connections, encoders, caches of the services)
            await direct(comfyui_url, plain, fresh_color(), size)
            await via_comfyline(api, fresh_color(), size)
        direct_s: list[float] = []
        routed_s: list[float] = []
        for n in range(jobs):
            await asyncio.sleep(pause_s)
            if n % 2 == 0:
                direct_s.append(await direct(comfyui_url, plain, fresh_color(), size))
                routed_s.append(await via_comfyline(api, fresh_color(), size))
            else:
                routed_s.append(await via_comfyline(api, fresh_color(), size))
                direct_s.append(await direct(comfyui_url, plain, fresh_color(), size))
    direct_ms = [s * 1000 for s in direct_s]
    routed_ms = [s * 1000 for s in routed_s]
    d, c = summary(direct_ms), summary(routed_ms)
    return {
        "jobs_per_side": jobs,
        "pause_s": pause_s,
        "image": f"{size}x{size}",
        "direct_ms": d,
        "comfyline_ms": c,
        "paired_difference_ms": summary([b - a for a, b in zip(direct_ms, routed_ms, strict=True)]),
        "overhead_ms": {k: c[k] - d[k] for k in ("median", "p90", "p99")},
    }


async def throughput(
    info: dict[str, Any], comfyui_url: str, jobs: int, clients: int, rounds: int, size: int
) -> dict[str, Any]:
    rates: dict[str, list[Rate]] = {"direct": [], "comfyline": []}
    async with direct_pool() as plain, api_client(info) as api:
        await closed_loop(
            lambda n: direct(comfyui_url, plain, fresh_color(), size), clients, clients
        )
        await closed_loop(lambda n: via_comfyline(api, fresh_color(), size), clients, clients)
        for r in range(rounds):
            order = ["direct", "comfyline"] if r % 2 == 0 else ["comfyline", "direct"]
            for side in order:
                if side == "direct":
                    rate = await closed_loop(
                        lambda n: direct(comfyui_url, plain, fresh_color(), size), jobs, clients
                    )
                else:
                    rate = await closed_loop(
                        lambda n: via_comfyline(api, fresh_color(), size), jobs, clients
                    )
                rates[side].append(rate)
    figures: dict[str, Any] = {
        "clients": clients,
        "jobs_per_round": jobs,
        "rounds_per_side": rounds,
        "image": f"{size}x{size}",
    }
    for kind in ("steady", "overall"):
        d = statistics.median(getattr(r, kind) for r in rates["direct"])
        c = statistics.median(getattr(r, kind) for r in rates["comfyline"])
        prefix = "" if kind == "steady" else "overall_"
        figures |= {
            f"{prefix}direct_jobs_per_s": d,
            f"{prefix}comfyline_jobs_per_s": c,
            f"{prefix}ratio": ratio(c, d),
        }
    figures["rounds"] = {side: [vars(r) for r in found] for side, found in rates.items()}
    return figures
