"""A model published to the ``models`` bucket is served by workers already running."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from comfyline.catalogue import Catalogue
from comfyline.comfyui_sim import SimulatorProcess
from comfyline.runtime import Bus, LiveCatalogue
from comfyline.worker import Worker

from .helpers import RunWatch, Workers, heartbeats, make_job


async def test_a_running_worker_binds_a_newly_published_model_and_runs_it(
    bus: Bus, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    async with LiveCatalogue(bus, Catalogue.builtin(), refresh_s=0.2) as catalogue:
        running = workers([sim.url], catalogue=catalogue, worker_id="w-live")
        smoke = Catalogue.builtin().get("cpu-smoke")
        await _until(lambda: "cpu-smoke" in _models(running.worker))
        assert "cpu-smoke-tall" not in _models(running.worker)

        added = smoke.model_copy(update={"name": "cpu-smoke-tall", "title": "Tall smoke"})
        kv = await bus.kv(bus.names.bucket("models"))
        await kv.put(added.name, added.to_bytes())
        await _until(lambda: "cpu-smoke-tall" in _models(running.worker))

        run_job = make_job(
            "cpu-smoke-tall", {"width": 32, "height": 96, "color": 5, "batch_size": 1}, owner="u1"
        )
        job_id = run_job.job_id
        await bus.publish(bus.names.work("cpu-smoke-tall"), run_job, msg_id=f"{job_id}:run")
        done = await runs.wait_for(job_id, "completed", "failed")
        assert done.kind == "completed", done.error
        assert (done.outputs[0].width, done.outputs[0].height) == (32, 96)
        beat = (await heartbeats(bus))["w-live"]
        assert "cpu-smoke-tall" in beat.models


def _models(worker: Worker) -> set[str]:
    return {name for server in worker.servers for name in server.models}


async def _until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not reached in time")
