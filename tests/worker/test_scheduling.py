"""Scheduling: model affinity keeps checkpoints loaded; batch work never delays interactive work
by more than the jobs already running."""

from __future__ import annotations

import time

from comfyline.runtime import Bus, NatsSettings, ObjectStore, S3Settings
from comfyline.testkit.worker import mixed_run

from .helpers import RunWatch, SimFactory, Workers, publish_job


async def test_with_affinity_100_mixed_jobs_on_two_servers_swap_at_most_5_times(
    bus: Bus,
    store: ObjectStore,
    nats_settings: NatsSettings,
    s3_settings: S3Settings,
    sim_factory: SimFactory,
) -> None:
    sims = [sim_factory("--model-load-time", "0.2", "--history-delay", "0") for _ in range(2)]
    run = await mixed_run(
        bus, store, nats_settings, s3_settings, [s.url for s in sims], jobs=100, affinity=True
    )
    assert sum(run.per_server.values()) == 100
    assert run.swaps <= 5, run
    assert len(run.per_server) == 2  # both servers worked


async def test_a_batch_of_100_never_delays_an_interactive_job_beyond_the_running_ones(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    sims = [sim_factory("--node-delay", "EmptyImage=0.05") for _ in range(2)]
    workers([s.url for s in sims])
    batch = [
        await publish_job(bus, "cpu-smoke", {"width": 32, "height": 32, "color": n}, lane="batch")
        for n in range(100)
    ]
    for job in batch[:10]:
        await runs.wait_for(job.job_id, "completed", timeout=60)
    published_at = time.time()
    urgent = await publish_job(bus, "cpu-smoke", {"width": 32, "height": 32, "color": 999})
    started = await runs.wait_for(urgent.job_id, "started")
    batch_ids = {j.job_id for j in batch}
    jumped = [
        e
        for _, e in runs.events
        if e.kind == "started"
        and e.job_id in batch_ids
        and published_at < e.occurred_at.timestamp() < started.occurred_at.timestamp()
    ]
    # Each server was running (or had just fetched) at most one batch job when it came.
    assert len(jumped) <= len(sims), [e.job_id for e in jumped]
    not_started = sum(1 for j in batch if not runs.of(j.job_id, "started"))
    assert not_started >= 50, "the interactive job went ahead of the batch's backlog"
    for job in batch:
        await runs.wait_for(job.job_id, "completed", timeout=60)
