"""A part of the local stack that exits is restarted with a backoff; one that keeps crashing
stops the stack. Real child processes; the clock is the test's, so no test waits on a backoff."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from comfyline.stack.servers import ChildProcess
from comfyline.stack.supervisor import Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _child(tmp_path: Path, name: str, code: str) -> ChildProcess:
    return ChildProcess(name, [sys.executable, "-c", code], tmp_path / f"{name}.log")


def _wait_dead(child: ChildProcess) -> None:
    assert child.process is not None
    child.process.wait(timeout=10)


def test_a_crashed_part_is_restarted_after_a_growing_pause(tmp_path: Path) -> None:
    flaky = _child(tmp_path, "worker", "import sys; sys.exit(3)")
    steady = _child(tmp_path, "gateway", "import time; time.sleep(60)")
    for child in (flaky, steady):
        child.spawn()
    said: list[str] = []
    clock = Clock()
    supervisor = Supervisor(lambda: {"worker": flaky, "gateway": steady}, said.append, clock=clock)
    try:
        _wait_dead(flaky)
        first_pid = flaky.pid
        assert supervisor.check() is None
        assert said == [
            f"worker stopped unexpectedly (exit code 3); restarting in 1 s (see {flaky.log_path})"
        ]
        clock.now += 0.5
        assert supervisor.check() is None and flaky.pid == first_pid  # not yet
        clock.now += 0.6
        assert supervisor.check() is None
        assert flaky.pid != first_pid and said[-1] == f"worker restarted (pid {flaky.pid})"
        assert supervisor.restarts == {"worker": 1}
        _wait_dead(flaky)
        supervisor.check()
        assert "restarting in 2 s" in said[-1]  # the pause grows
        assert steady.alive() and "gateway" not in supervisor.restarts
    finally:
        for child in (flaky, steady):
            child.stop(grace_s=2)


def test_a_part_that_keeps_crashing_stops_the_stack(tmp_path: Path) -> None:
    broken = _child(tmp_path, "orchestrator", "import sys; sys.exit(1)")
    broken.spawn()
    said: list[str] = []
    clock = Clock()
    supervisor = Supervisor(lambda: {"orchestrator": broken}, said.append, clock=clock)
    try:
        gave_up = None
        for _ in range(20):
            _wait_dead(broken)
            gave_up = supervisor.check()
            if gave_up:
                break
            clock.now += 20  # past any backoff: restart now
            assert supervisor.check() is None
            deadline = time.monotonic() + 10
            while broken.alive() and time.monotonic() < deadline:
                time.sleep(0.01)
        assert gave_up == "orchestrator"
        assert said[-1] == "orchestrator stopped 5 times in 120 s; stopping everything"
        assert supervisor.restarts == {"orchestrator": 4}
    finally:
        broken.stop(grace_s=2)
