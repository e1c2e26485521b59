"""Each server executes one job at a time with the next already queued, two servers at once;
ended or cancelled records are skipped.
(Cancel while pending and while running: test_both_servers.py, on the simulator and a real
ComfyUI.)"""

from __future__ import annotations

import asyncio

import httpx

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import CancelCommand, JobState, new_job_id
from comfyline.runtime import Bus

from .helpers import RunWatch, SimFactory, Workers, publish_job, put_record, queue_ids


async def test_two_servers_run_two_jobs_at_once_each_with_one_queued_behind(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    sims = [sim_factory("--node-delay", "EmptyImage=0.6") for _ in range(2)]
    workers([s.url for s in sims])
    jobs = [
        await publish_job(bus, "cpu-smoke", {"width": 32, "height": 32, "color": i})
        for i in range(4)
    ]
    most = {s.url: 0 for s in sims}
    both_busy = False
    async with httpx.AsyncClient(timeout=5) as client:
        while not all(runs.of(j.job_id, "completed") for j in jobs):
            busy = 0
            for s in sims:
                running, pending = await queue_ids(client, s.url)
                most[s.url] = max(most[s.url], len(running) + len(pending))
                busy += bool(running)
            both_busy = both_busy or busy == 2
            await asyncio.sleep(0.05)
            assert all(not runs.of(j.job_id, "failed") for j in jobs)
    # pipeline_depth 2: one executing and one waiting in ComfyUI's queue, never more
    assert most == {s.url: 2 for s in sims}, "each server held exactly one job ahead"
    assert both_busy, "the two servers ran jobs at the same time"
    servers = runs.by_server()
    assert sorted(servers) == sorted(s.url for s in sims)
    assert sorted(len(v) for v in servers.values()) == [2, 2]


async def test_a_job_whose_record_is_cancelled_or_ended_is_skipped(
    bus: Bus, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    cancelled = await publish_job(bus, "cpu-smoke", {"color": 1})
    await put_record(bus, cancelled, JobState.DISPATCHED, cancel_requested=True)
    ended = await publish_job(bus, "cpu-smoke", {"color": 2})
    await put_record(bus, ended, JobState.TIMED_OUT)
    control = await publish_job(bus, "cpu-smoke", {"color": 3})  # no record yet: still runs
    workers([sim.url])  # started after the records are written
    await runs.wait_for(control.job_id, "completed")
    await asyncio.sleep(0.3)
    assert runs.of(cancelled.job_id) == [] and runs.of(ended.job_id) == []
    info = await bus.js.consumer_info(
        bus.names.stream("WORK"), bus.names.work_consumer("cpu-smoke")
    )
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_a_first_delivery_is_stopped_by_the_cancel_command_not_a_record_read(
    bus: Bus, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    """Published while the worker listens for cancels, a job's first delivery needs no read of
    its record: the cancel command heard before the fetch stops it; a record that says it ended
    (which the orchestrator always follows with a command) is not read. A redelivery reads it."""
    workers([sim.url])
    warm = await publish_job(bus, "cpu-smoke", {"color": 1})
    await runs.wait_for(warm.job_id, "completed")
    await asyncio.sleep(1.2)  # past the listener's clock margin
    cancelled_id = new_job_id()
    await bus.send(
        bus.names.cancel(cancelled_id), CancelCommand(job_id=cancelled_id, reason="by test")
    )
    await bus.nc.flush()
    await asyncio.sleep(0.2)
    cancelled = await publish_job(bus, "cpu-smoke", {"color": 2}, job_id=cancelled_id)
    not_read = await publish_job(bus, "cpu-smoke", {"color": 3}, job_id=new_job_id())
    await put_record(bus, not_read, JobState.TIMED_OUT)
    assert (await runs.wait_for(cancelled.job_id, "cancelled", "started")).kind == "cancelled"
    await runs.wait_for(not_read.job_id, "completed")
    assert runs.of(cancelled.job_id, "started") == []
