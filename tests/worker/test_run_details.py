"""Details of one run: progress, previews, caching, in-progress acks, node_errors on 200."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from PIL import Image

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import ErrorCode, OutputKind, OutputSpec, Progress
from comfyline.runtime import Bus, ObjectStore
from comfyline.testkit.fixtures import stored
from comfyline.worker import ComfyClient, ComfyRun, PromptRejected, RunOptions
from comfyline.worker.frames import Preview
from comfyline.worker.run import RunResult

from .helpers import RunWatch, SimFactory, Workers, publish_job


async def test_progress_is_throttled_rising_and_names_node_and_step(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    sim: SimulatorProcess = sim_factory("--step-time", "0.05")
    workers([sim.url], progress_interval_s=0.2)
    job = await publish_job(
        bus, "txt2img-sdxl", {"prompt": "a lighthouse", "width": 128, "height": 128, "steps": 20}
    )
    done = await runs.wait_for(job.job_id, "completed", "failed")
    assert done.kind == "completed", done.error
    progress = [e.progress for e in runs.of(job.job_id, "progress") if e.progress]
    percents = [p.percent for p in progress]
    assert percents == sorted(percents) and 0 < percents[-1] <= 100
    sampler = [p for p in progress if p.node_type == "KSampler" and p.steps == 20]
    assert sampler and all(p.step is not None and 0 <= p.step <= 20 for p in sampler)
    # 20 steps of 50 ms = 1 s of sampling; at most one event per 0.2 s (plus the edges)
    assert 2 <= len(progress) <= 10
    kinds = [e.kind for e in runs.of(job.job_id)]
    assert kinds[0] == "started" and kinds[-1] == "completed"
    assert done.gpu_seconds is not None and done.gpu_seconds >= 1.0


async def test_previews_are_stored_and_reported_when_on(
    bus: Bus, store: ObjectStore, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    sim: SimulatorProcess = sim_factory("--step-time", "0.05", "--preview-method", "auto")
    workers([sim.url], previews=True, preview_interval_s=0.2)
    job = await publish_job(
        bus, "txt2img-sdxl", {"prompt": "a lighthouse", "width": 128, "height": 128, "steps": 30}
    )
    await runs.wait_for(job.job_id, "completed")
    previews = [e.preview for e in runs.of(job.job_id, "preview") if e.preview]
    assert previews and previews[0].key == f"{job.output_prefix}preview.jpg"
    assert previews[0].content_type == "image/jpeg"
    data = await store.get_bytes(previews[0].key)
    assert data[:2] == b"\xff\xd8"


async def test_an_identical_job_runs_cached_and_still_has_its_outputs(
    bus: Bus, store: ObjectStore, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    workers([sim.url])
    data = {"width": 48, "height": 48, "color": 0x00FF00}
    first = await publish_job(bus, "cpu-smoke", data)
    one = await runs.wait_for(first.job_id, "completed")
    second = await publish_job(bus, "cpu-smoke", data)
    two = await runs.wait_for(second.job_id, "completed")
    assert one.outputs[0].filename == two.outputs[0].filename, "each save starts a new folder"
    assert two.outputs[0].key == f"{second.output_prefix}0.png"
    # the same pixels (each PNG carries its own prompt, whose save folder is the run's own)
    images = [
        Image.open(io.BytesIO(await stored(store, done.outputs[0].key))) for done in (one, two)
    ]
    assert images[0].tobytes() == images[1].tobytes() and images[0].size == (48, 48)


async def test_in_progress_acks_keep_a_long_job_from_being_redelivered(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    sim: SimulatorProcess = sim_factory("--node-delay", "EmptyImage=5")
    other: SimulatorProcess = sim_factory()
    workers([sim.url, other.url], ack_wait_s=2)  # in-progress every 0.67 s
    job = await publish_job(bus, "cpu-smoke", {"color": 99})
    done = await runs.wait_for(job.job_id, "completed", timeout=30)
    assert done.attempt == 1
    assert list(runs.starts(job.job_id)) == [1], "never handed to the idle second server"


class Quiet:
    """A listener that only counts."""

    def __init__(self) -> None:
        self.started_with: str | None = None
        self.over = False

    async def started(self, prompt_id: str) -> None:
        self.started_with = prompt_id

    def progress(self, progress: Progress) -> None:
        pass

    def preview(self, preview: Preview) -> None:
        pass

    def run_over(self) -> None:
        self.over = True


async def kept(result: RunResult) -> None:
    """Keep nothing of a run's result."""


async def test_node_errors_on_a_200_refuse_the_run_and_take_the_prompt_back(
    sim_factory: SimFactory,
) -> None:
    sim: SimulatorProcess = sim_factory("--node-delay", "EmptyImage=1")
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 3},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ok"}},
        "3": {
            "class_type": "EmptyImage",
            "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "bad"}},
    }
    client = ComfyClient(sim.url)
    run = ComfyRun(
        client, graph, [OutputSpec(node="2", kind=OutputKind.IMAGE)], Quiet(), RunOptions()
    )
    try:
        with pytest.raises(PromptRejected) as refused:
            await run.execute(kept)
        assert refused.value.code == ErrorCode.COMFY_VALIDATION and refused.value.node_id == "3"
        await asyncio.sleep(1.5)
        async with httpx.AsyncClient() as http:
            history = (await http.get(f"{sim.url}/history/{run.prompt_id}")).json()
            queue = (await http.get(f"{sim.url}/queue")).json()
        assert queue == {"queue_running": [], "queue_pending": []}
        outputs = history.get(run.prompt_id, {}).get("outputs", {})
        assert "2" not in outputs, "the valid branch did not run to completion"
    finally:
        await client.aclose()
