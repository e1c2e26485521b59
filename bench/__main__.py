"""Comfyline's overhead over ComfyUI itself, measured against a baseline in the same run.

    uv run python -m bench [all|overhead|simulator|affinity] [--jobs 40] [--concurrency 8]
                           [--comfyui-url URL] [--json FILE] [--load-time 0.5]

Starts the local stack (embedded NATS, S3, the ComfyUI simulator unless --comfyui-url, the four
services) in a temporary folder, then runs the same ``cpu-smoke`` job (a fresh colour each time,
so nothing is cached):

1. direct: straight to ComfyUI (WebSocket + POST /prompt + /view), the baseline;
2. comfyline: through the gateway (POST /v1/jobs with ``Prefer: wait``, then download the output
   through its presigned link), i.e. every hop: gateway, JetStream, orchestrator, worker, S3.

It prints the median and p95 of each, the overhead Comfyline adds at the median, and throughput
with several concurrent clients. The design budget is "a few milliseconds per job at the median"
of overhead on top of ComfyUI; the last line says whether this run met it.

``affinity`` (see ``bench/affinity.py``): checkpoint swaps per 100 mixed jobs on two servers and
the throughput, with model affinity on and off, side by side in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from comfyline.catalogue import Catalogue, render, validate_input
from comfyline.stack.local import LocalStack
from comfyline.stack.servers import free_port

from . import affinity, simulator
from .direct import run_direct

BUDGET_MS = 5.0


def _graph(color: int, size: int) -> dict[str, Any]:
    template = Catalogue.builtin().get("cpu-smoke")
    data = validate_input(template, {"width": size, "height": size, "color": color})
    return render(template, data)


async def _via_comfyline(client: httpx.AsyncClient, color: int, size: int) -> float:
    started = time.perf_counter()
    response = await client.post(
        "/v1/jobs",
        json={"model": "cpu-smoke", "input": {"width": size, "height": size, "color": color}},
        headers={"Prefer": "wait=60"},
    )
    response.raise_for_status()
    job = response.json()
    while job["status"] not in {"succeeded", "failed", "cancelled", "timed_out"}:
        job = (await client.get(f"/v1/jobs/{job['id']}", headers={"Prefer": "wait=60"})).json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']}: {job.get('error')}")
    for output in job["outputs"]:
        (await client.get(output["url"])).raise_for_status()
    return time.perf_counter() - started


def _summary(name: str, seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    row = {"median_ms": statistics.median(ms), "p95_ms": p95, "n": len(ms)}
    print(f"  {name:<22} median {row['median_ms']:8.2f} ms   p95 {p95:8.2f} ms   n={len(ms)}")
    return row


async def _throughput(run_one: Any, jobs: int, concurrency: int) -> float:
    queue = iter(range(jobs))
    started = time.perf_counter()

    async def client_loop() -> None:
        for n in queue:
            await run_one(n)

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return jobs / (time.perf_counter() - started)


async def _measure(info: dict[str, Any], jobs: int, concurrency: int, size: int) -> dict[str, Any]:
    comfy = info["comfyui_url"]
    auth = {"Authorization": f"Bearer {info['api_key']}"}
    limits = httpx.Limits(max_connections=64)
    async with (
        httpx.AsyncClient(timeout=120, limits=limits) as plain,
        httpx.AsyncClient(
            base_url=info["gateway_url"], headers=auth, timeout=120, limits=limits
        ) as api,
    ):
        for n in range(3):  # warm both paths
            await run_direct(comfy, _graph(0x100000 + n, size), plain)
            await _via_comfyline(api, 0x200000 + n, size)
        print(f"\nsequential, {jobs} jobs each (cpu-smoke {size}x{size}, fresh colour per job):")
        direct = [await run_direct(comfy, _graph(0x300000 + n, size), plain) for n in range(jobs)]
        routed = [await _via_comfyline(api, 0x400000 + n, size) for n in range(jobs)]
        results: dict[str, Any] = {
            "direct": _summary("direct to ComfyUI", direct),
            "comfyline": _summary("through Comfyline", routed),
        }
        overhead = results["comfyline"]["median_ms"] - results["direct"]["median_ms"]
        results["overhead_median_ms"] = overhead
        print(f"  {'overhead (median)':<22} {overhead:+8.2f} ms")
        print(f"\n{concurrency} concurrent clients, {jobs} jobs each path:")
        d_rate = await _throughput(
            lambda n: run_direct(comfy, _graph(0x500000 + n, size), plain), jobs, concurrency
        )
        c_rate = await _throughput(
            lambda n: _via_comfyline(api, 0x600000 + n, size), jobs, concurrency
        )
        print(f"  {'direct to ComfyUI':<22} {d_rate:8.1f} jobs/s")
        print(f"  {'through Comfyline':<22} {c_rate:8.1f} jobs/s ({c_rate / d_rate:.0%})")
        results |= {"direct_jobs_per_s": d_rate, "comfyline_jobs_per_s": c_rate}
        return results


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "which", nargs="?", default="all", choices=["all", "overhead", "simulator", "affinity"]
    )
    parser.add_argument("--load-time", type=float, default=0.5, help="affinity: s per load")
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--comfyui-url", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.which in {"all", "simulator"}:
        results |= simulator.run(jobs=args.jobs)
    if args.which in {"all", "overhead"}:
        results |= _overhead(args)
    if args.which in {"all", "affinity"}:
        results |= affinity.run(load_time=args.load_time)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _overhead(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="comfyline-bench-") as tmp:
        stack = LocalStack(Path(tmp) / "state", port=free_port(), comfyui_url=args.comfyui_url)
        print("starting the local stack ...")
        info = stack.start(on_step=lambda line: print(line))
        try:
            results = asyncio.run(_measure(info, args.jobs, args.concurrency, args.size))
        finally:
            stack.stop()
    verdict = "within" if results["overhead_median_ms"] <= BUDGET_MS else "over"
    print(
        f"\nbudget: overhead <= {BUDGET_MS:.0f} ms at the median -> this run is {verdict} budget "
        f"({results['overhead_median_ms']:.2f} ms)"
    )
    return results


if __name__ == "__main__":
    main()
