"""Faults against the whole system as ``comfyline up`` runs it: every job ends exactly once.

One stack (separate processes: nats-server, weed, the ComfyUI simulator, the four services) goes
through each fault in turn while jobs run: SIGKILL of the worker, the orchestrator and ComfyUI;
ComfyUI frozen for 30 s and S3 frozen for 20 s (SIGSTOP, then SIGCONT); nats-server killed (the
stack starts it again on the same port and store); and a burst of 1,000 jobs. After each, every
job submitted during it must have ended ``succeeded`` with its output in S3, with exactly one
terminal event on ``JOBS``, and every active-job slot must come back. The figures go to
``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyline.stack import free_port

from .conftest import Stack
from .jobs import (
    assert_each_succeeded_once,
    outcome,
    settled_terminal_events,
    stack_info,
    submit,
    wait_all,
    wait_slots_released,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1500)]

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


def _run_fault(
    stack: Stack,
    name: str,
    jobs: int,
    fault: Callable[[], None],
    timeout_s: float = 300,
    hits_a_run: bool = False,
) -> None:
    info = stack_info(stack)
    auth = {"Authorization": f"Bearer {info['api_key']}"}
    started = time.monotonic()
    with httpx.Client(base_url=info["gateway_url"], headers=auth, timeout=30) as client:
        ids = submit(client, jobs, name)
        fault()
        ended = wait_all(client, ids, timeout_s)
    took = time.monotonic() - started
    terminal = settled_terminal_events(info["nats_urls"], ids, timeout_s=90)
    RESULTS[name] = outcome(ids, ended, terminal, took)
    if hits_a_run:  # the fault struck a job mid-run, which was then tried again
        assert RESULTS[name]["retried"] >= 1, RESULTS[name]
    assert_each_succeeded_once(ids, ended, terminal, RESULTS[name])
    # Every slot comes back (the next fault starts from an empty count: the burst fills the cap).
    held = wait_slots_released(info["nats_urls"], timeout_s=90)
    assert not held, f"active-job slots still held after {name}: {held}"


def _kill(stack: Stack, name: str, after_s: float = 1.0) -> Callable[[], None]:
    def fault() -> None:
        time.sleep(after_s)  # some jobs are running by now
        os.kill(stack_info(stack)["pids"][name], signal.SIGKILL)

    return fault


def _freeze(stack: Stack, name: str, for_s: float) -> Callable[[], None]:
    def fault() -> None:
        pid = stack_info(stack)["pids"][name]
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
