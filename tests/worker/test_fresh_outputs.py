"""A job's small outputs are kept in JetStream when the job completes (no S3 upload on its
path) and copied to S3 by the workers' archiver; a larger one goes to S3 on the path."""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import utcnow
from comfyline.runtime import Bus, FreshOutputs, FreshSettings, ObjectNotFound, ObjectStore
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


async def test_an_output_the_stream_has_no_room_for_is_in_s3_when_the_job_completes(
    bus: Bus, store: ObjectStore, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    """A full stream refuses the output: the worker stores it in S3 before it reports the job
    completed, and the output says it is not kept fresh (its link goes to S3 directly)."""
    room = 1024 * 1024  # the smallest stream the settings allow
    filler = FreshOutputs(bus, FreshSettings(max_bytes=200_000, total_bytes=room))
    await filler.ensure()
    n = 0
    for size in (190_000, 10_000, 500, 20):  # full, to within a few bytes
        while await filler.put(f"outputs/filler/job-{n}/0.bin", b"f" * size, "x/y"):
            n += 1
    workers([sim.url], fresh={"total_bytes": room}, background_defer_s=60)
    job = await publish_job(bus, "cpu-smoke", {"width": 40, "height": 20, "color": 0x0000FF})
    done = await runs.wait_for(job.job_id, "completed", "failed")
    assert done.kind == "completed", done.error
    [out] = done.outputs
    assert out.fresh_until is None
    assert await FreshOutputs(bus).get(out.key) is None  # the stream refused it
    data = await store.get_bytes(out.key)  # no wait: stored before the report
    image = Image.open(io.BytesIO(data))
    assert len(data) == out.size and image.convert("RGB").getpixel((3, 3)) == (0, 0, 255)


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


async def test_a_jobs_background_work_waits_for_the_next_run_not_beside_its_answer(
    bus: Bus, store: ObjectStore, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    """A job's copy to S3 and the removal of its run folder wait for the worker's next run
    (here, up to ``background_defer_s`` = 60 s otherwise): never beside the answer to the job
    that made them. A worker that stops does what waits at once."""
    folder = sim.output_dir
    worker = workers([sim.url], background_defer_s=60, comfyui_output_dirs={sim.url: folder})

    async def run_one(color: int) -> tuple[str, str]:
        job = await publish_job(bus, "cpu-smoke", {"width": 32, "height": 16, "color": color})
        done = await runs.wait_for(job.job_id, "completed", "failed")
        assert done.kind == "completed", done.error
        [out] = done.outputs
        assert out.fresh_until is not None
        return out.key, job.job_id

    async def in_s3(key: str) -> bool:
        try:
            await store.stat(key)
        except ObjectNotFound:
            return False
        return True

    first, first_job = await run_one(0x102030)
    await asyncio.sleep(0.5)
    assert not await in_s3(first), "copied beside the job's answer"
    assert (folder / "comfyline" / f"{first_job}-1").is_dir(), "removed beside the answer"
    second, second_job = await run_one(0x405060)
    kept = await FreshOutputs(bus).get(first)
    assert kept is not None and await stored(store, first) == kept.data  # during the 2nd run
    for _ in range(100):
        if not (folder / "comfyline" / f"{first_job}-1").exists():
            break
        await asyncio.sleep(0.05)
    assert not (folder / "comfyline" / f"{first_job}-1").exists()
    await asyncio.sleep(0.5)
    assert not await in_s3(second), "its own run does not count"
    await worker.stop()
    assert await in_s3(second)  # no wait: done before the worker went
    assert not (folder / "comfyline" / f"{second_job}-1").exists()
