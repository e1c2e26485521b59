"""Faults against the whole system as ``comfyline up`` runs it: every job ends exactly once.

One stack (separate processes: nats-server, weed, the ComfyUI simulator, the four services) goes
through each fault in turn while jobs run: SIGKILL of the worker, the orchestrator and ComfyUI;
ComfyUI frozen for 30 s and S3 frozen for 20 s (SIGSTOP, then SIGCONT); nats-server killed (the
stack starts it again on the same port and store); and a burst of 1,000 jobs. After each, every
job submitted during it must have ended ``succeeded`` with its output in S3, with exactly one
terminal event on ``JOBS``. The figures go to ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from comfyline.stack import free_port

from .conftest import Stack

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1500)]

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("faults") / "state", free_port())
    # Each job takes at least 50 ms on the "GPU", so a fault lands while jobs are running.
    stack.env["COMFYLINE_SIM_ARGS"] = "--node-delay EmptyImage=0.05"
    stack.up()
    try:
        yield stack
    finally:
        stack.down()
        report = Path(os.environ.get("COMFYLINE_FAULT_REPORT", "")) if RESULTS else None
        if report and str(report) not in ("", "."):
            report.write_text(json.dumps(RESULTS, indent=2))


def _info(stack: Stack) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((stack.state_dir / "stack.json").read_text())
    return info


def _submit(client: httpx.Client, n: int, tag: str) -> list[str]:
    ids = []
    for i in range(n):
        body = {
            "model": "cpu-smoke",
            "input": {"width": 64, "height": 64, "color": (i * 7919) % 0xFFFFFF},
            "metadata": {"fault": tag},
        }
        answer = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": f"{tag}-{i}"})
        assert answer.status_code in (200, 202), answer.text
        ids.append(answer.json()["id"])
    return ids


def _wait_all(client: httpx.Client, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(ids) and time.monotonic() < deadline:
        for job_id in ids:
            if job_id in done:
                continue
            try:
                job = client.get(f"/v1/jobs/{job_id}")
            except httpx.HTTPError:
                continue  # the gateway may be reconnecting
            if job.status_code == 200 and job.json()["status"] in TERMINAL:
                done[job_id] = job.json()
        time.sleep(0.5)
    missing = [j for j in ids if j not in done]
    assert not missing, f"{len(missing)} jobs never ended, e.g. {missing[:3]}"
    return [done[j] for j in ids]


def _terminal_events(nats_url: str, ids: list[str]) -> Counter[str]:
    """How many terminal events each job has on JOBS (from the server's subject index)."""

    async def count() -> Counter[str]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            found: Counter[str] = Counter()
            for kind in ("completed", "failed", "cancelled", "timed_out"):
                info = await js.stream_info("JOBS", subjects_filter=f"jobs.*.*.{kind}")
                for subject, n in (info.state.subjects or {}).items():
                    found[subject.split(".")[2]] += int(n)
            return Counter({j: found[j] for j in ids})
        finally:
            await nc.close()

    return asyncio.run(count())


def _run_fault(
    stack: Stack,
    name: str,
    jobs: int,
    fault: Callable[[], None],
    timeout_s: float = 300,
    hits_a_run: bool = False,
) -> None:
    info = _info(stack)
    auth = {"Authorization": f"Bearer {info['api_key']}"}
    started = time.monotonic()
    with httpx.Client(base_url=info["gateway_url"], headers=auth, timeout=30) as client:
        ids = _submit(client, jobs, name)
        fault()
        ended = _wait_all(client, ids, timeout_s)
    took = time.monotonic() - started
    statuses = Counter(job["status"] for job in ended)
    codes = Counter(job["error"]["code"] for job in ended if job.get("error"))
    terminal = _terminal_events(info["nats_url"], ids)
    RESULTS[name] = {
        "submitted": jobs,
        "statuses": dict(statuses),
        "error_codes": dict(codes),
        "lost": sum(1 for j in ids if terminal[j] == 0),
        "duplicated": sum(1 for j in ids if terminal[j] > 1),
        "retried": sum(1 for job in ended if job.get("attempts", 1) > 1),
        "seconds": round(took, 1),
    }
    assert statuses == {"succeeded": jobs}, RESULTS[name]
    if hits_a_run:  # the fault struck a job mid-run, which was then tried again
        assert RESULTS[name]["retried"] >= 1, RESULTS[name]
    assert all(terminal[j] == 1 for j in ids), RESULTS[name]
    for job in ended:
        [output] = job["outputs"]
        assert output["size"] > 0 and (output["width"], output["height"]) == (64, 64)


def _kill(stack: Stack, name: str, after_s: float = 1.0) -> Callable[[], None]:
    def fault() -> None:
        time.sleep(after_s)  # some jobs are running by now
        os.kill(_info(stack)["pids"][name], signal.SIGKILL)

    return fault


def _freeze(stack: Stack, name: str, for_s: float) -> Callable[[], None]:
    def fault() -> None:
        pid = _info(stack)["pids"][name]
        time.sleep(1.0)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(for_s)
        finally:
            os.kill(pid, signal.SIGCONT)

    return fault


def test_sigkill_of_the_worker(faulty: Stack) -> None:
    _run_fault(faulty, "worker SIGKILL", 40, _kill(faulty, "worker"), hits_a_run=True)


def test_sigkill_of_the_orchestrator(faulty: Stack) -> None:
    _run_fault(faulty, "orchestrator SIGKILL", 40, _kill(faulty, "orchestrator"))


def test_sigkill_of_comfyui(faulty: Stack) -> None:
    _run_fault(faulty, "ComfyUI SIGKILL", 40, _kill(faulty, "comfyui-sim"), hits_a_run=True)


def test_comfyui_frozen_for_30_s(faulty: Stack) -> None:
    _run_fault(faulty, "ComfyUI stopped 30 s", 40, _freeze(faulty, "comfyui-sim", 30))


def test_s3_frozen_for_20_s(faulty: Stack) -> None:
    _run_fault(faulty, "S3 stopped 20 s", 40, _freeze(faulty, "weed", 20))


def test_nats_server_killed_and_started_again(faulty: Stack) -> None:
    _run_fault(faulty, "nats-server killed and restarted", 40, _kill(faulty, "nats-server"))


def test_a_burst_of_1000_jobs(faulty: Stack) -> None:
    _run_fault(faulty, "1,000-job burst", 1000, lambda: None, timeout_s=600)
