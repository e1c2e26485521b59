"""A cpu-smoke job through a real NATS, a real S3 and the simulator."""

from __future__ import annotations

import io

from PIL import Image

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.runtime import Bus, ObjectStore
from comfyline.testkit.fixtures import stored

from .helpers import RunWatch, Workers, publish_job


async def test_cpu_smoke_job_completes_and_stores_a_png(
    bus: Bus, store: ObjectStore, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    # A started delay no run of this job reaches, even the first of a simulator on a loaded
    # machine (one took 0.26 s in CI, past the default 0.2 s)
    workers([sim.url], started_delay_s=5.0)
    job = await publish_job(bus, "cpu-smoke", {"width": 96, "height": 48, "color": 0xFF0000})
    done = await runs.wait_for(job.job_id, "completed", "failed")
    assert done.kind == "completed", done.error
    # A run that ends within the worker's started delay: its end says when it began.
    assert [e.kind for e in runs.of(job.job_id)] == ["completed"]
    assert done.started_at is not None and done.started_at <= done.occurred_at
    [out] = done.outputs
    assert out.key == f"{job.output_prefix}0.png"
    assert (out.width, out.height, out.content_type) == (96, 48, "image/png")
    image = Image.open(io.BytesIO(await stored(store, out.key)))
    assert image.size == (96, 48)
    assert image.convert("RGB").getpixel((10, 10)) == (255, 0, 0)
    assert out.size == len(await stored(store, out.key))
