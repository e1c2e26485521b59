"""What Comfyline adds to each job on top of ComfyUI, measured against baselines in the same run.

    uv run python -m bench [all|overhead|busy|throughput|gateway|memory|simulator|affinity]
                           [--tiny] [--comfyui-url URL] [--json FILE] [--pipeline-depth N]

``all`` (the default) measures, on this machine, in one run (sides alternated):

a. overhead: the same ``cpu-smoke`` job (512x512, a fresh colour each time) straight to
   ComfyUI (WebSocket, POST /prompt, /view) and through Comfyline (POST /v1/jobs with
   ``Prefer: wait``, then GET of the output's link), sequentially, job by job
   alternated; median, p90, p99 of both sides and of each pair's difference. On the simulator,
   and on the ComfyUI named by ``--comfyui-url`` (or ``COMFYUI_URL``) when one is given. Then
   the same on the simulator with the jobs 1.2 s apart (a lightly loaded stack, idle between
   jobs, as most web apps' traffic is). And the floor under every hop of a job's path: one
   round trip to NATS (a JetStream publish) and one to ComfyUI, after 20 ms idle and back to
   back (``bench/hops.py``).
b. GPU busy: K = 1, 4, 16 simulated servers whose job takes 200 ms, a backlog queued before the
   workers start; busy fraction per server and idle gap between jobs from the servers' own
   execution logs.
c. throughput: 8 clients direct vs Comfyline (zero-delay simulator, 200 ms jobs, the real
   ComfyUI when given); end-to-end jobs/s for 1, 2 and 4 workers on zero-delay simulators; the
   accepted submissions/s of the gateway alone.
d. the gateway's memory per idle SSE stream at 1,000 and 5,000 streams.
e. the worker's peak RSS while it moves a 500 MB output to S3.

It prints every figure beside its target and writes them to ``bench/results/latest.json``
(``--json`` elsewhere). ``--tiny`` runs every part with a handful of jobs in a minute or two, to
prove the bench works (CI), not to judge speed; it writes no file unless ``--json`` is given.
Every server runs on 127.0.0.1 in a temporary folder and is stopped by its PID at the end.
``simulator`` and ``affinity`` are the simulator's own speed and model affinity
(``bench/simulator.py``, ``bench/affinity.py``). ``--s3-delay-ms N`` puts N ms between the
services and S3 on each round trip (``bench/remote.py``), as for an object store across a
network; a run with it writes no ``latest.json`` unless ``--json`` names a file.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from comfyline.stack.servers import free_port

from . import affinity, bigoutput, busy, endtoend, gateway, hops, overhead, simulator
from .clients import REFUSED
from .report import machine as machine_of
from .report import table
from .stack import BenchStack, start_simulators, stop_simulators

RESULTS = Path(__file__).parent / "results" / "latest.json"
SLOW_JOB = ["--node-delay", "EmptyImage=0.2"]
#: The pause between jobs of the sparse overhead run: longer than the consumers' idle pull.
SPARSE_PAUSE_S = 1.2
PARTS = ["all", "overhead", "busy", "throughput", "gateway", "memory"]


@dataclass(frozen=True)
class Sizes:
    """How much of each part runs: the full bench, or the tiny one that proves it works."""

    sequential_jobs: int = 200
    sparse_jobs: int = 20
    hop_rounds: int = 200
    tp_jobs: int = 64
    tp_slow_jobs: int = 32
    tp_rounds: int = 2
    busy_ks: tuple[int, ...] = (1, 4, 16)
    busy_per_server: int = 15
    e2e_workers: tuple[int, ...] = (1, 2, 4)
    e2e_jobs: int = 150
    e2e_clients: int = 32
    submissions: int = 2000
    sse_steps: tuple[int, ...] = (1000, 5000)
    output_mb: float = 500.0


TINY = Sizes(
    sequential_jobs=10,
    sparse_jobs=3,
    hop_rounds=10,
    tp_jobs=16,
    tp_slow_jobs=16,
    tp_rounds=1,
    busy_ks=(1, 4),
    busy_per_server=4,
    e2e_workers=(1, 2),
    e2e_jobs=32,
    e2e_clients=8,
    submissions=200,
    sse_steps=(50,),
    output_mb=10.0,
)


def _workers_for(k: int) -> int:
    """Workers for K servers in the busy part: one per 8 servers."""
    return max(1, k // 8)


def _say(line: str) -> None:
    print(line, flush=True)


class Parts:
    """Runs each part, keeping its figures, or its error (the other parts still run)."""

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}
        self.failed: list[str] = []

    def measure(self, key: str, label: str, run: Callable[[], Any]) -> None:
        _say(label + " ...")
        began = time.monotonic()
        try:
            self.results[key] = run()
        except Exception as exc:  # one part's failure is reported, not fatal to the others
            traceback.print_exc()
            self.results[key] = {"error": f"{type(exc).__name__}: {exc}"}
            self.failed.append(key)
        _say(f"    {time.monotonic() - began:.0f} s")


def _full_stack(args: argparse.Namespace, sizes: Sizes, root: Path, parts: Parts) -> None:
    which = args.which
    env = {"WORKER_PIPELINE_DEPTH": str(args.pipeline_depth)} if args.pipeline_depth else {}
    zero = start_simulators(root / "zero", max(sizes.e2e_workers), [])
    slow = start_simulators(root / "slow", max(sizes.busy_ks), SLOW_JOB)
    big = start_simulators(root / "big", 1, ["--png-compress-level", "0"])
    sims = [*zero, *slow, *big]
    stack = BenchStack(
        root / "state",
        port=free_port(),
        comfyui_url=zero[0].url,
        worker_env=env,
        s3_delay_ms=args.s3_delay_ms,
    )
    stack.output_dirs = {sim.url: sim.output_dir for sim in sims}
    if args.comfyui_url and args.comfyui_output_dir:
        stack.output_dirs[args.comfyui_url.rstrip("/")] = args.comfyui_output_dir
    size = 512
    try:
        _say("starting the local stack ...")
        info = stack.start(on_step=_say)
        places = [("simulator", zero[0].url)]
        if args.comfyui_url:
            places.append(("real_comfyui", args.comfyui_url))

        def sequential(url: str) -> Any:
            return asyncio.run(overhead.sequential(info, url, sizes.sequential_jobs, size))

        def sparse(url: str) -> Any:
            pause = SPARSE_PAUSE_S
            return asyncio.run(overhead.sequential(info, url, sizes.sparse_jobs, size, pause))

        def hop_floor(url: str) -> Any:
            return asyncio.run(hops.run(stack.nats_urls[0], url, sizes.hop_rounds))

        def clients8(url: str, jobs: int) -> Any:
            return asyncio.run(overhead.throughput(info, url, jobs, 8, sizes.tp_rounds, size))

        for where, url in places if which in {"all", "overhead", "throughput"} else []:
            if which in {"all", "overhead"} and where == "simulator":
                stack.set_workers([[url]], shared_outputs=False)  # a worker on another host
                parts.measure(
                    "overhead_simulator_view",
                    f"(a) sequential, {sizes.sequential_jobs} jobs per side, {where}, "
                    "outputs through /view",
                    functools.partial(sequential, url),
                )
            stack.set_workers([[url]])
            if which in {"all", "overhead"}:
                parts.measure(
                    f"overhead_{where}",
                    f"(a) sequential, {sizes.sequential_jobs} jobs per side, {where}",
                    functools.partial(sequential, url),
                )
            if which in {"all", "overhead"} and where == "simulator":
                parts.measure(
                    "overhead_sparse_simulator",
                    f"(a) sequential, {sizes.sparse_jobs} jobs per side, "
                    f"{SPARSE_PAUSE_S:g} s apart, {where}",
                    functools.partial(sparse, url),
                )
            if which in {"all", "overhead"} and where == "simulator":
                parts.measure(
                    "hop_floor",
                    f"(a) one hop's round trip, {sizes.hop_rounds} pairs, idle / back to back",
                    functools.partial(hop_floor, url),
                )
            if which in {"all", "throughput"}:
                parts.measure(
                    f"throughput_{where}",
                    f"(c) 8 clients, {where}",
                    functools.partial(clients8, url, sizes.tp_jobs),
                )
        if which in {"all", "throughput"}:
            stack.set_workers([[slow[0].url]])
            parts.measure(
                "throughput_200ms",
                "(c) 8 clients, 200 ms jobs",
                functools.partial(clients8, slow[0].url, sizes.tp_slow_jobs),
            )
            parts.measure(
                "end_to_end",
                f"(c) end to end, {list(sizes.e2e_workers)} workers, zero-delay",
                lambda: endtoend.run(
                    stack, zero, list(sizes.e2e_workers), sizes.e2e_jobs, sizes.e2e_clients, 64
                ),
            )
        if which in {"all", "busy"}:
            busy_parts = Parts()
            for k in sizes.busy_ks:
                busy_parts.measure(
                    f"k_{k}",
                    f"(b) GPU busy, K={k}, {sizes.busy_per_server} jobs per server",
                    functools.partial(
                        busy.run_k, stack, slow[:k], _workers_for(k), sizes.busy_per_server, 64
                    ),
                )
            parts.results["busy"] = busy_parts.results
            parts.failed += [f"busy.{key}" for key in busy_parts.failed]
        if which in {"all", "memory"}:
            parts.measure(
                "worker_memory",
                f"(e) worker memory, one {sizes.output_mb:.0f} MB output",
                lambda: bigoutput.run(stack, big[0].url, sizes.output_mb),
            )
    finally:
        stack.stop()
        stop_simulators(sims)


def _gateway_alone(sizes: Sizes, root: Path, parts: Parts) -> None:
    stack = BenchStack(root / "gateway", port=free_port(), gateway_only=True, comfyui_url="-")
    try:
        _say("starting NATS, S3 and the gateway alone ...")
        info = stack.start(on_step=_say)

        def submissions() -> dict[str, Any]:
            asyncio.run(gateway.submissions(info, min(200, sizes.submissions), 16))  # warm-up
            before = stack.cpu_by_part([])
            found = asyncio.run(gateway.submissions(info, sizes.submissions, 16))
            after = stack.cpu_by_part([])
            found["cpu_ms_per_submission"] = {
                part: (after[part] - before.get(part, 0.0)) * 1000 / sizes.submissions
                for part in after
            }
            return found

        parts.measure(
            "gateway_submissions",
            f"(c) gateway alone, {sizes.submissions} submissions",
            submissions,
        )
        parts.measure(
            "sse_memory",
            f"(d) idle SSE streams {list(sizes.sse_steps)}",
            lambda: asyncio.run(
                gateway.sse_memory(info, stack.pid_of("gateway"), list(sizes.sse_steps))
            ),
        )
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "which",
        nargs="?",
        default="all",
        choices=[
            "all",
            "overhead",
            "busy",
            "throughput",
            "gateway",
            "memory",
            "simulator",
            "affinity",
        ],
    )
    parser.add_argument("--tiny", action="store_true", help="a few jobs per part (CI)")
    parser.add_argument(
        "--comfyui-url",
        default=os.environ.get("COMFYUI_URL") or None,
        help="a real ComfyUI to measure too (default: $COMFYUI_URL)",
    )
    parser.add_argument(
        "--comfyui-output-dir",
        type=Path,
        default=Path(os.environ["COMFYUI_OUTPUT_DIR"])
        if os.environ.get("COMFYUI_OUTPUT_DIR")
        else None,
        help="that ComfyUI's output folder, if this machine can read it (default: "
        "$COMFYUI_OUTPUT_DIR): its worker reads outputs there, as one beside it would",
    )
    parser.add_argument(
        "--pipeline-depth",
        type=int,
        default=None,
        help="WORKER_PIPELINE_DEPTH of every worker (default: the worker's own default)",
    )
    parser.add_argument(
        "--s3-delay-ms",
        type=float,
        default=0,
        help="add this many ms to each round trip between the services and S3, as for an "
        "object store across a network (bench/remote.py); the clients' links stay direct",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--load-time", type=float, default=0.5, help="affinity: s per load")
    args = parser.parse_args()
    if args.which == "simulator":
        simulator.run()
        return
    if args.which == "affinity":
        affinity.run(load_time=args.load_time)
        return
    sizes = TINY if args.tiny else Sizes()
    began = time.monotonic()
    machine = machine_of()
    parts = Parts()
    with tempfile.TemporaryDirectory(prefix="comfyline-bench-") as tmp:
        root = Path(tmp)
        if args.which != "gateway":
            _full_stack(args, sizes, root, parts)
        if args.which in {"all", "gateway"}:
            _gateway_alone(sizes, root, parts)
    results = parts.results
    results["requests_refused_then_retried"] = dict(REFUSED)
    text, verdicts = table(results)
    took = time.monotonic() - began
    print(f"\nComfyline bench ({'tiny' if args.tiny else 'full'}, {took:.0f} s):\n{text}")
    default = not args.tiny and args.which == "all" and not args.s3_delay_ms
    out = args.json or (RESULTS if default else None)
    if out is not None:
        document = {
            "command": "uv run python -m bench " + " ".join(sys.argv[1:]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": took,
            "machine": machine | {"load_average_after": os.getloadavg()},
            "comfyui_url_given": bool(args.comfyui_url),
            "pipeline_depth": args.pipeline_depth,
            "s3_delay_ms": args.s3_delay_ms,
            "targets": verdicts,
            "results": results,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"written to {out}")
    if parts.failed:
        raise SystemExit(f"parts that failed: {', '.join(parts.failed)}")


if __name__ == "__main__":
    main()
