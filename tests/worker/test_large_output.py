"""A 200 MB output streams from ComfyUI to S3 without the worker holding it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.runtime import Bus, NatsSettings, ObjectStore, S3Settings

from .helpers import RunWatch, SimFactory, WorkerProcess, heartbeats, publish_job


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_200_mb_output_streams_with_flat_memory(
    bus: Bus,
    store: ObjectStore,
    sim_factory: SimFactory,
    runs: RunWatch,
    nats_settings: NatsSettings,
    s3_settings: S3Settings,
    tmp_path: Path,
) -> None:
    sim: SimulatorProcess = sim_factory("--png-compress-level", "0")
    proc = WorkerProcess(
        tmp_path / "w.log",
        nats_settings,
        s3_settings,
        bus.names.namespace,
        [sim.url],
        worker_id="w-big",
        read_timeout_s=120,
    ).start()
    try:
        for _ in range(100):  # up, bound, idle
            beat = (await heartbeats(bus)).get("w-big")
            if beat and beat.models:
                break
            await asyncio.sleep(0.1)
        # steady state first: a 12 MB output (multipart, upload threads started)
        warm = await publish_job(bus, "cpu-smoke", {"width": 2048, "height": 2048, "color": 1})
        await runs.wait_for(warm.job_id, "completed", timeout=60)
        before = proc.peak_rss_kb()
        job = await publish_job(
            bus, "cpu-smoke", {"width": 8192, "height": 8192, "color": 0x123456}
        )
        done = await runs.wait_for(job.job_id, "completed", "failed", timeout=240)
        assert done.kind == "completed", done.error
        growth_mb = (proc.peak_rss_kb() - before) / 1024
        print(f"peak RSS growth for the 200 MB output: {growth_mb:.1f} MB")
        [out] = done.outputs
        assert out.size > 200 * 1000 * 1000 and (out.width, out.height) == (8192, 8192)
        stat = await store.stat(out.key)
        assert stat.size == out.size and stat.content_type == "image/png"
        assert growth_mb < 50, (
            f"peak RSS grew by {growth_mb:.1f} MB for a {out.size / 1e6:.0f} MB file"
        )
    finally:
        proc.signal(signal.SIGTERM)
        await proc.wait(30)
