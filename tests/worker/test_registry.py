"""The worker's entry in the workers bucket: jobs starting and ending are written together."""

from __future__ import annotations

import asyncio
import time

from comfyline.contracts import WorkerHeartbeat, bucket_spec
from comfyline.runtime import Bus
from comfyline.worker.registry import Registry


async def _writes(bus: Bus, worker_id: str, seconds: float) -> list[tuple[float, WorkerHeartbeat]]:
    """Every write of ``worker_id``'s entry for ``seconds``, with when it was seen."""
    kv = await bus.kv(bus.names.bucket("workers"))
    watcher = await kv.watch(worker_id, include_history=False)
    seen: list[tuple[float, WorkerHeartbeat]] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            entry = await watcher.updates(timeout=left)  # type: ignore[no-untyped-call]
        except TimeoutError:
            break
        if entry is not None and entry.value:
            seen.append((time.monotonic(), WorkerHeartbeat.from_bytes(entry.value)))
    await watcher.stop()  # type: ignore[no-untyped-call]
    return seen


async def test_jobs_moving_are_written_once_per_gap_and_a_poke_at_once(bus: Bus) -> None:
    await bus.ensure_buckets([bucket_spec(bus.names, "workers")])
    registry = Registry(bus, "worker-r", [], interval_s=30.0, jobs_gap_s=0.6)
    task = asyncio.create_task(registry.run())
    try:
        await asyncio.sleep(0.7)  # the first write, and a gap since it
        watching = asyncio.create_task(_writes(bus, "worker-r", 2.5))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        for _ in range(5):  # five jobs start and end within 0.2 s
            registry.count("ack")
            await asyncio.sleep(0.04)
        await asyncio.sleep(0.9)
        poked = time.monotonic()
        registry.poke()
        seen = await watching
    finally:
        task.cancel()
    seen = [(at, beat) for at, beat in seen if at >= started]  # (the watch opens on the entry)
    assert seen and seen[-1][1].jobs_done == 5, [b.jobs_done for _, b in seen]
    job_writes = [at for at, _ in seen if at < poked]
    # the first move is written at once (a gap had passed), the other four together after it
    assert len(job_writes) == 2, [(round(at - started, 2), b.jobs_done) for at, b in seen]
    assert job_writes[1] - job_writes[0] >= 0.5
    assert any(poked <= at < poked + 0.3 for at, _ in seen), "the poke was written at once"
