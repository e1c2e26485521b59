"""Model affinity: checkpoint swaps per 100 mixed jobs, and the throughput they cost.

    uv run python -m bench affinity [--jobs 100] [--load-time 0.5] [--rounds 2]

Two ComfyUI simulators, each taking ``--load-time`` seconds to load a checkpoint that is not the
one it has loaded (``--model-load-time``), behind one worker with two servers. The same 100 jobs,
alternating between two models that read different checkpoints, run with affinity on and with
it off (round-robin over the models, the order before affinity), rounds alternating the sides,
all in one run on the same servers. A swap is a job whose checkpoint is not the one its server
ran last (a server's first load is not counted).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import uuid
from pathlib import Path

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import Names, bucket_spec, stream_spec
from comfyline.runtime import Bus, NatsSettings, ObjectStore, S3Settings
from comfyline.stack.servers import NatsServer, SeaweedS3
from comfyline.testkit.worker import MixedRun, mixed_run


async def _measure(
    nats: NatsSettings, s3: S3Settings, urls: list[str], jobs: int, rounds: int
) -> dict[str, list[MixedRun]]:
    results: dict[str, list[MixedRun]] = {"affinity": [], "round-robin": []}
    for n in range(rounds):
        sides = [True, False] if n % 2 == 0 else [False, True]
        for affinity in sides:
            names = Names(f"b{uuid.uuid4().hex[:10]}")
            bus = await Bus.connect(nats, names, "bench-affinity")
            try:
                await bus.ensure_streams(stream_spec(names, s) for s in ("WORK", "RUNS"))
                await bus.ensure_buckets(bucket_spec(names, b) for b in ("jobs", "workers"))
                store = ObjectStore(s3)
                await store.ensure_bucket()
                run = await mixed_run(bus, store, nats, s3, urls, jobs=jobs, affinity=affinity)
            finally:
                await bus.close()
            side = "affinity" if affinity else "round-robin"
            results[side].append(run)
            print(
                f"  {side:<12} swaps {run.swaps:3d}   {run.seconds:6.1f} s   "
                f"{run.jobs_per_s:5.2f} jobs/s   per server {sorted(run.per_server.values())}"
            )
    return results


def run(jobs: int = 100, load_time: float = 0.5, rounds: int = 2) -> dict[str, float]:
    """Start NATS, S3 and two simulators; measure both sides; print and return the figures."""
    with tempfile.TemporaryDirectory(prefix="comfyline-bench-affinity-") as tmp:
        root = Path(tmp)
        knobs = ["--history-delay", "0", "--model-load-time", str(load_time)]
        sims = [SimulatorProcess(root / f"sim{n}", args=knobs) for n in range(2)]
        with (
            NatsServer(root / "nats") as nats_server,
            SeaweedS3(root / "s3", "bench", "bench-secret") as s3_server,
        ):
            for sim in sims:
                sim.start()
            try:
                nats = NatsSettings(url=nats_server.url)
                s3 = S3Settings(
                    endpoint=s3_server.endpoint,
                    access_key="bench",
                    secret_key="bench-secret",
                    bucket="bench-affinity",
                )
                print(
                    f"\nmodel affinity: {jobs} jobs alternating 2 checkpoints, 2 servers, "
                    f"{load_time} s per checkpoint load, {rounds} rounds (sides alternated):"
                )
                results = asyncio.run(_measure(nats, s3, [s.url for s in sims], jobs, rounds))
            finally:
                for sim in sims:
                    sim.stop()
    figures: dict[str, float] = {}
    for side, runs in results.items():
        key = side.replace("-", "_")
        figures[f"{key}_swaps_per_{jobs}"] = statistics.median(r.swaps for r in runs)
        figures[f"{key}_jobs_per_s"] = statistics.median(r.jobs_per_s for r in runs)
    gain = figures["affinity_jobs_per_s"] / figures["round_robin_jobs_per_s"]
    figures["affinity_throughput_ratio"] = gain
    print(
        f"  median swaps per {jobs}: affinity {figures[f'affinity_swaps_per_{jobs}']:.0f}, "
        f"round-robin {figures[f'round_robin_swaps_per_{jobs}']:.0f}; "
        f"throughput with affinity x{gain:.2f}"
    )
    return figures
