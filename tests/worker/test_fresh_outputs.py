"""A job's small outputs are kept in JetStream when the job completes (no S3 upload on its
path) and copied to S3 by the workers' archiver; a larger one goes to S3 on the path."""

from __future__ import annotations

import io

from PIL import Image

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import utcnow
from comfyline.runtime import Bus, FreshOutputs, FreshSettings, ObjectStore
from comfyline.testkit.fixtures import TEST_FRESH_TOTAL_BYTES, stored

from .helpers import RunWatch, Workers, publish_job


async def test_a_small_output_is_kept_fresh_then_copied_to_s3(
    bus: Bus, store: ObjectStore, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    workers([sim.url])
    job = await publish_job(bus, "cpu-smoke", {"width": 96, "height": 48, "color": 0x00FF00})
    done = await runs.wait_for(job.job_id, "completed", "failed")
    assert done.kind == "completed", done.error
    [out] = done.outputs
    assert out.fresh_until is not None and out.fresh_until > utcnow()
    kept = await FreshOutputs(bus).get(out.key)
    assert kept is not None and kept.content_type == "image/png"
    assert len(kept.data) == out.size
    assert kept.metadata == {"job-id": job.job_id, "node-id": out.node_id}
    image = Image.open(io.BytesIO(kept.data))
    assert image.size == (96, 48) and image.convert("RGB").getpixel((5, 5)) == (0, 255, 0)
    assert await stored(store, out.key) == kept.data
    info = await store.stat(out.key)
    assert info.content_type == "image/png" and info.metadata.get("job-id") == job.job_id


async def test_an_output_over_the_limit_is_in_s3_when_the_job_completes(
    bus: Bus, store: ObjectStore, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    workers([sim.url], fresh={"max_bytes": 64, "total_bytes": TEST_FRESH_TOTAL_BYTES})
    job = await publish_job(bus, "cpu-smoke", {"width": 96, "height": 48})
    done = await runs.wait_for(job.job_id, "completed", "failed")
    assert done.kind == "completed", done.error
    [out] = done.outputs
    assert out.fresh_until is None
    assert len(await store.get_bytes(out.key)) == out.size  # no wait: stored on the path
    assert await FreshOutputs(bus).get(out.key) is None


async def test_a_worker_that_stops_copies_what_waits_to_be_copied_first(
    bus: Bus, store: ObjectStore, sim: SimulatorProcess, workers: Workers
) -> None:
    """Outputs kept while no archiver ran (the last worker stopped, or died) are copied by the
    next worker; one asked to stop at once still copies them before it goes."""
    fresh = FreshOutputs(bus, FreshSettings(total_bytes=TEST_FRESH_TOTAL_BYTES))
    await fresh.ensure()
    keys = [f"outputs/user-1/job-{n}/0.png" for n in range(40)]
    for n, key in enumerate(keys):
        assert await fresh.put(key, b"png %d" % n, "image/png") is not None
    worker = workers([sim.url])
    await worker.stop()
    for n, key in enumerate(keys):
        assert await store.get_bytes(key) == b"png %d" % n  # no wait: copied before it went
