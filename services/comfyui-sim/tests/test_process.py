"""The simulator as a process: the launcher, the command line, start-up time, speed of a
`cpu-smoke` job, graceful SIGTERM, and the server dying mid-run (fault injection)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comfyline.comfyui_sim.config import build_parser
from comfyline.comfyui_sim.launcher import SimulatorProcess, SimulatorStartError
from comfyline.testkit.comfyui import ComfyClient, empty_image_graph, is_done


def test_help_lists_every_knob() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "comfyline.comfyui_sim", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    flags = [a.option_strings[-1] for a in build_parser()._actions if a.option_strings]
    assert len(flags) > 20
    for flag in flags:
        assert flag in result.stdout, flag
    assert "NOT ComfyUI" in result.stdout


def test_launcher_starts_answers_and_stops_by_pid(tmp_path: Path) -> None:
    with SimulatorProcess(tmp_path) as sim:
        assert sim.running and sim.url.startswith("http://127.0.0.1:")
        pid = sim.pid
        log = sim.log_tail()
        assert "Comfyline ComfyUI simulator (NOT ComfyUI)" in log
        assert (tmp_path / "input").is_dir() and (tmp_path / "output").is_dir()
    assert not sim.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_sigterm_stops_the_simulator_cleanly(tmp_path: Path) -> None:
    sim = SimulatorProcess(tmp_path).start()
    started = time.monotonic()
    assert sim.stop() == 0
    assert time.monotonic() - started < 3


def test_a_bad_command_line_fails_to_start_with_its_message(tmp_path: Path) -> None:
    sim = SimulatorProcess(tmp_path, args=["--node-delay", "nonsense"], startup_timeout=10)
    with pytest.raises(SimulatorStartError) as failed:
        sim.start()
    assert "CLASS=SECONDS" in str(failed.value)


async def test_die_at_kills_the_server_mid_run(tmp_path: Path) -> None:
    # (EmptyImage takes a moment, so the prompt's answer is sent before the server dies: with
    # none, a loaded machine could run the prompt to SaveImage before answering the POST)
    sim = SimulatorProcess(
        tmp_path, args=["--die-at", "SaveImage", "--node-delay", "EmptyImage=0.3"]
    )
    await asyncio.to_thread(sim.start)
    client = ComfyClient(sim.url)
    try:
        socket = await client.connect()
        prompt_id = await client.submit(empty_image_graph(), socket)
        await asyncio.wait_for(socket.closed.wait(), 10)
        assert "execution_start" in socket.types(prompt_id)
        assert not any(f.type == "executing" and f.data["node"] is None for f in socket.frames)
        assert await asyncio.to_thread(sim.wait, 10) == 70
    finally:
        await client.close()
        await asyncio.to_thread(sim.stop)


async def test_startup_delay_holds_back_the_port(tmp_path: Path) -> None:
    began = time.monotonic()
    sim = SimulatorProcess(tmp_path, args=["--startup-delay", "0.5"])
    await asyncio.to_thread(sim.start)
    try:
        assert time.monotonic() - began >= 0.5
        client = ComfyClient(sim.url)
        socket = await client.connect()
        prompt_id = await client.submit(empty_image_graph(), socket)
        await socket.wait_for(is_done(prompt_id))
        await client.close()
    finally:
        await asyncio.to_thread(sim.stop)
