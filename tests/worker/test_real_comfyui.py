"""The same worker code against a real ComfyUI (``COMFYUI_URL``, or one started from the cache by
the ``real_comfyui`` fixture), on the cpu-smoke path."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from comfyline.runtime import Bus, ObjectStore

from .helpers import RunWatch, Workers, publish_job

pytestmark = pytest.mark.real_comfyui


async def test_cpu_smoke_runs_on_a_real_comfyui(
    bus: Bus, store: ObjectStore, workers: Workers, runs: RunWatch, real_comfyui: str
) -> None:
    running = workers([real_comfyui], models=["cpu-smoke"])
    jobs = [
        await publish_job(bus, "cpu-smoke", {"width": 64, "height": 32, "color": 0x3366CC}),
        # identical: a real ComfyUI answers from its cache with the old file name
        await publish_job(bus, "cpu-smoke", {"width": 64, "height": 32, "color": 0x3366CC}),
    ]
    for job in jobs:
        done = await runs.wait_for(job.job_id, "completed", "failed", timeout=90)
        assert done.kind == "completed", done.error
        [out] = done.outputs
        image = Image.open(io.BytesIO(await store.get_bytes(out.key)))
        assert image.size == (64, 32) and (out.width, out.height) == (64, 32)
        assert image.convert("RGB").getpixel((3, 3)) == (0x33, 0x66, 0xCC)
    server = running.worker.servers[0]
    assert server.healthy and "cpu-smoke" in server.models and server.version
