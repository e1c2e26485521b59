"""An orchestrator killed with SIGKILL mid-pipeline: a restarted one finishes the pipeline, and no
step runs twice."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import JobState
from comfyline.runtime import NatsSettings
from comfyline.testkit.orchestrator import (
    event_counts,
    orchestrator_process,
    orchestrator_ready,
    until,
)
from tests.worker.helpers import flac_bytes

from .conftest import Services, Stack

Sims = Callable[..., SimulatorProcess]


async def run_counts(stack: Stack, job_id: str) -> dict[str, int]:
    """How many run events of each kind the workers reported for a job."""
    names = stack.bus.names
    prefix = names.run_event(job_id, "started").removesuffix("started")
    info = await stack.bus.js.stream_info(names.stream("RUNS"), subjects_filter=f"{prefix}*")
    return {s.rsplit(".", 1)[-1]: n for s, n in (info.state.subjects or {}).items()}


@pytest.mark.timeout(300)  # two orchestrator starts and three steps, on a loaded machine too
async def test_sigkill_mid_pipeline_resumes_with_no_step_run_twice(
    stack: Stack,
    services: Services,
    sims: Sims,
    nats_settings: NatsSettings,
    tmp_path: Path,
) -> None:
    slow = ("--step-time", "0.15")
    await services.workers([sims(*slow).url, sims(*slow).url])
    voice = await stack.upload(flac_bytes(2.0), "voice.flac", "audio/flac")
    log = tmp_path / "orchestrator.log"
    namespace = stack.bus.names.namespace
    with orchestrator_process(nats_settings, namespace, log) as first:
        await until(lambda: orchestrator_ready(stack.bus), timeout_s=30, every_s=0.1)
        response = await stack.submit(
            "talking-portrait",
            {
                "description": "a sailor",
                "text": "Ahoy there.",
                "voice": voice,
                "resolution": 256,
                "max_duration_s": 2,
            },
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        await stack.wait(
            job_id, lambda r: sum(s.status == "running" for s in r.steps) == 2, timeout_s=60
        )
        first.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL
    at_kill = await stack.record(job_id)
    assert at_kill is not None and at_kill.status is JobState.RUNNING
    assert {s.name: s.status for s in at_kill.steps}["lipsync"] == "pending"
    await asyncio.sleep(1.0)  # the running steps go on on their workers meanwhile

    with orchestrator_process(nats_settings, namespace, log) as second:
        done = await stack.wait(job_id, timeout_s=120)
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 20) == 0, log.read_text()[-3000:]

    assert done.status is JobState.SUCCEEDED, (done.error, log.read_text()[-3000:])
    assert [s.status for s in done.steps] == ["succeeded"] * 3
    jobs = await event_counts(stack.bus)
    assert jobs[f"{job_id}.completed"] == 1
    for step in done.steps:
        child = await stack.record(step.job_id or "")
        assert child is not None and child.status is JobState.SUCCEEDED
        assert child.attempts == 1, step.name
        assert jobs[f"{child.id}.submitted"] == 1, step.name
        assert jobs[f"{child.id}.completed"] == 1, step.name
        runs = await run_counts(stack, child.id)
        # (a step that ends within the worker's started delay reports its start with its end)
        assert runs.get("started", 0) <= 1 and runs["completed"] == 1, (step.name, runs)
