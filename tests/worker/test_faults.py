"""Faults: a lost socket, a ComfyUI that dies, a worker killed or stopped mid-job, a new worker."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.runtime import Bus, NatsSettings, S3Settings
from comfyline.testkit.orchestrator import until
from comfyline.worker import ComfyClient, ComfyUnavailable

from .helpers import RunWatch, SimFactory, WorkerProcess, Workers, heartbeats, publish_job


async def test_a_dropped_socket_reconnects_and_the_job_completes(
    bus: Bus,
    sim_factory: SimFactory,
    workers: Workers,
    runs: RunWatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # every socket is cut as SaveImage starts: its frames go nowhere, so the worker must
    # reconnect with the same clientId and catch up (history) to find the output
    sim: SimulatorProcess = sim_factory("--drop-ws-at", "SaveImage")
    running = workers([sim.url])
    job = await publish_job(bus, "cpu-smoke", {"width": 40, "height": 40, "color": 5})
    done = await runs.wait_for(job.job_id, "completed", "failed")
    assert done.kind == "completed", done.error
    assert done.attempt == 1 and done.outputs[0].width == 40
    assert done.outputs[0].filename and done.outputs[0].filename.startswith("cpu_smoke")
    assert "ComfyUI socket lost, reconnecting" in caplog.text
    assert running.worker.servers[0].healthy


async def test_a_comfyui_that_dies_gives_the_job_back_and_is_down_until_it_answers(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    dying: SimulatorProcess = sim_factory("--die-at", "SaveImage")
    port = dying.port
    running = workers([dying.url])
    job = await publish_job(bus, "cpu-smoke", {"width": 24, "height": 24, "color": 77})
    failed = await runs.wait_for(job.job_id, "failed", "completed")
    assert failed.kind == "failed" and not failed.final
    assert failed.error is not None and failed.error.code == "comfy_unavailable"
    server = running.worker.servers[0]
    await asyncio.sleep(0.5)
    assert not server.healthy
    beats = await heartbeats(bus)
    assert beats[running.worker.settings.worker_id].servers[0].healthy is False
    assert not runs.of(job.job_id, "completed")
    dying.stop()
    sim_factory(port=port)  # the same server comes back, without the fault
    done = await runs.wait_for(job.job_id, "completed", timeout=30)
    assert done.attempt == 2 and server.healthy


async def test_a_new_worker_joins_and_takes_work_with_no_configuration_change(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    # Long enough for a second simulator and worker to start on a loaded machine.
    first: SimulatorProcess = sim_factory("--node-delay", "EmptyImage=10")
    # No pipelining: a second job queued behind the first would stay there (see test_pipeline).
    workers([first.url], worker_id="worker-a", pipeline_depth=1)
    long_job = await publish_job(bus, "cpu-smoke", {"color": 1})
    await runs.wait_for(long_job.job_id, "started")
    waiting = await publish_job(bus, "cpu-smoke", {"color": 2})
    await asyncio.sleep(0.3)
    assert not runs.of(waiting.job_id), "one job at a time: the second waits"
    for _ in range(30):  # jobs starting show in the entry within jobs_report_gap_s (1 s)
        beats: dict[str, Any] = await heartbeats(bus)
        if beats["worker-a"].servers[0].busy:
            break
        await asyncio.sleep(0.1)
    assert (
        beats["worker-a"].servers[0].busy and beats["worker-a"].servers[0].job_id == long_job.job_id
    )
    second: SimulatorProcess = sim_factory()
    joined = workers([second.url], worker_id="worker-b")
    done = await runs.wait_for(waiting.job_id, "completed")
    assert done.server == second.url and done.worker_id == "worker-b"
    assert not runs.of(long_job.job_id, "completed"), "the new worker did not wait for the first"
    beats.clear()

    async def both() -> bool:
        beats.update(await heartbeats(bus))
        return set(beats) == {"worker-a", "worker-b"}

    await until(both, timeout_s=10, every_s=0.2)
    assert "cpu-smoke" in beats["worker-b"].models and beats["worker-b"].servers[0].healthy
    await joined.stop()
    assert "worker-b" not in await heartbeats(bus), "a clean stop leaves the fleet"
    await runs.wait_for(long_job.job_id, "completed")


async def test_sigterm_lets_the_running_job_finish_then_drains(
    bus: Bus,
    sim_factory: SimFactory,
    runs: RunWatch,
    nats_settings: NatsSettings,
    s3_settings: S3Settings,
    tmp_path: Path,
) -> None:
    sim: SimulatorProcess = sim_factory("--node-delay", "EmptyImage=1.5")
    proc = WorkerProcess(
        tmp_path / "w.log",
        nats_settings,
        s3_settings,
        bus.names.namespace,
        [sim.url],
        worker_id="w-term",
        shutdown_grace_s=20,
    ).start()
    try:
        job = await publish_job(bus, "cpu-smoke", {"color": 11})
        await runs.wait_for(job.job_id, "started", timeout=30)
        proc.signal(signal.SIGTERM)
        code = await proc.wait(30)
        assert code == 0, proc.log_tail()
        assert runs.of(job.job_id, "completed"), proc.log_tail()
        assert "w-term" not in await heartbeats(bus)
        later = await publish_job(bus, "cpu-smoke", {"color": 12})
        await asyncio.sleep(1.0)
        assert not runs.of(later.job_id), "a stopped worker fetches nothing"
    finally:
        proc.signal(signal.SIGKILL)


@pytest.mark.slow
async def test_sigterm_past_the_grace_period_gives_the_job_back(
    bus: Bus,
    sim_factory: SimFactory,
    workers: Workers,
    runs: RunWatch,
    nats_settings: NatsSettings,
    s3_settings: S3Settings,
    tmp_path: Path,
) -> None:
    slow: SimulatorProcess = sim_factory("--node-delay", "EmptyImage=4")
    proc = WorkerProcess(
        tmp_path / "w.log",
        nats_settings,
        s3_settings,
        bus.names.namespace,
        [slow.url],
        shutdown_grace_s=0.5,
    ).start()
    try:
        job = await publish_job(bus, "cpu-smoke", {"color": 21})
        await runs.wait_for(job.job_id, "started", timeout=30)
        proc.signal(signal.SIGTERM)
        assert await proc.wait(30) == 0, proc.log_tail()
        given_back = await runs.wait_for(job.job_id, "failed")
        assert not given_back.final
        workers([sim_factory().url])
        done = await runs.wait_for(job.job_id, "completed", timeout=30)
        assert done.attempt == 2
    finally:
        proc.signal(signal.SIGKILL)


@pytest.mark.slow
async def test_a_worker_killed_mid_job_loses_nothing_and_the_job_finishes_once(
    bus: Bus,
    sim_factory: SimFactory,
    workers: Workers,
    runs: RunWatch,
    nats_settings: NatsSettings,
    s3_settings: S3Settings,
    tmp_path: Path,
) -> None:
    sim: SimulatorProcess = sim_factory("--node-delay", "EmptyImage=2")
    proc = WorkerProcess(
        tmp_path / "w.log", nats_settings, s3_settings, bus.names.namespace, [sim.url], ack_wait_s=3
    ).start()
    try:
        job = await publish_job(bus, "cpu-smoke", {"color": 31})
        first = await runs.wait_for(job.job_id, "started", timeout=30)
        proc.signal(signal.SIGKILL)
        await proc.wait(10)
    finally:
        proc.signal(signal.SIGKILL)
    workers([sim_factory().url], ack_wait_s=3)
    done = await runs.wait_for(job.job_id, "completed", timeout=40)
    assert done.attempt == 2 and first.attempt == 1
    await asyncio.sleep(4)  # longer than the ack wait: nothing comes back
    assert len(runs.of(job.job_id, "completed")) == 1
    info = await bus.js.consumer_info(
        bus.names.stream("WORK"), bus.names.work_consumer("cpu-smoke")
    )
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_an_upload_to_a_frozen_comfyui_gives_up_instead_of_hanging(
    sim_factory: SimFactory,
) -> None:
    """ComfyUI stops taking an input's bytes mid-upload (frozen: SIGSTOP). A write has no
    timeout of its own, so the upload would hold the job's place for ever; it fails as ComfyUI
    unavailable once no byte was taken for the read timeout."""
    sim = sim_factory()
    client = ComfyClient(sim.url, read_timeout_s=1.0)
    size = 64 << 20  # far more than the sockets' buffers hold

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(size >> 20):
            yield b"\0" * (1 << 20)

    os.kill(sim.pid, signal.SIGSTOP)
    try:
        with pytest.raises(ComfyUnavailable, match="stopped taking the upload"):
            await asyncio.wait_for(
                client.upload(
                    "big.png", chunks(), size=size, content_type="image/png", subfolder="t"
                ),
                30,
            )
    finally:
        os.kill(sim.pid, signal.SIGCONT)
        await client.aclose()
