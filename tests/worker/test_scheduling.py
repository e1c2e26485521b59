"""Scheduling: model affinity keeps checkpoints loaded; batch work never delays interactive work
by more than the jobs already running."""

from __future__ import annotations

import time

from comfyline.runtime import Bus, NatsSettings, ObjectStore, S3Settings
from comfyline.testkit.orchestrator import until
from comfyline.testkit.worker import CHECKPOINTS, mixed_run, swap_catalogue

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
    # (each job a moment long, so the backlog cannot be half done, on a loaded machine, before
    # the test has seen its first ten end)
    sims = [sim_factory("--history-delay", "0", "--node-delay", "KSampler=0.05") for _ in range(2)]
    workers([s.url for s in sims], catalogue=swap_catalogue())
    model = next(iter(CHECKPOINTS))
    batch = [
        await publish_job(bus, model, {"seed": n}, lane="batch", validate=False) for n in range(100)
    ]
    for job in batch[:10]:
        await runs.wait_for(job.job_id, "completed", timeout=60)
    published_at = time.time()
    urgent = await publish_job(bus, model, {"seed": 999}, validate=False)
    await runs.wait_for(urgent.job_id, "started", "completed")
    urgent_start = runs.starts(urgent.job_id)[1].timestamp()
    jumped = [
        job.job_id
        for job in batch
        if any(
            published_at < s.timestamp() < urgent_start for s in runs.starts(job.job_id).values()
        )
    ]
    # Each server held at most its pipeline of batch jobs when it came (one executing, one
    # queued behind it: pipeline_depth 2).
    assert len(jumped) <= 2 * len(sims), jumped
    not_started = sum(1 for j in batch if not runs.starts(j.job_id))
    assert not_started >= 50, "the interactive job went ahead of the batch's backlog"
    await until(lambda: completed_in_runs(bus, 101), timeout_s=90, every_s=0.5)


async def completed_in_runs(bus: Bus, count: int) -> bool:
    """True once ``count`` jobs have a ``completed`` report in ``RUNS`` (read from the stream's
    subject index, not from a consumer)."""
    info = await bus.js.stream_info(
        bus.names.stream("RUNS"), subjects_filter=bus.names.all_run_events()
    )
    subjects = info.state.subjects or {}
    return sum(1 for subject in subjects if subject.endswith(".completed")) >= count


async def test_a_cold_models_job_waits_no_longer_than_the_affinity_bound(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    """A server kept busy by its warm model still takes another model's job once that job has
    waited ``affinity_wait_s``, long before the warm queue is empty."""
    sim = sim_factory("--node-delay", "KSampler=0.05", "--history-delay", "0")
    workers([sim.url], catalogue=swap_catalogue(), affinity_wait_s=1.0)
    warm, cold = list(CHECKPOINTS)
    first = await publish_job(bus, warm, {"seed": 0}, validate=False)
    await runs.wait_for(first.job_id, "completed")
    backlog = [await publish_job(bus, warm, {"seed": n}, validate=False) for n in range(1, 41)]
    waiting = await publish_job(bus, cold, {"seed": 99}, validate=False)
    for job in [waiting, *backlog]:
        await runs.wait_for(job.job_id, "completed", timeout=60)
    warm_ids = {j.job_id for j in backlog}
    order = [e.job_id for e in runs.start_order()]
    after = [job_id for job_id in order[order.index(waiting.job_id) :] if job_id in warm_ids]
    assert len(after) >= 10, "the cold job waited for (nearly) the whole warm queue"
