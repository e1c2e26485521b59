"""One job at a time per server, two servers at once; cancel while pending and while running."""

from __future__ import annotations

import asyncio

import httpx

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import CancelCommand, JobState
from comfyline.runtime import Bus

from .helpers import RunWatch, SimFactory, Workers, publish_job, put_record


async def queue_sizes(client: httpx.AsyncClient, url: str) -> tuple[set[str], set[str]]:
    data = (await client.get(f"{url}/queue")).json()
    return ({e[1] for e in data["queue_running"]}, {e[1] for e in data["queue_pending"]})


async def test_two_servers_run_two_jobs_at_once_and_never_two_on_one(
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
                running, pending = await queue_sizes(client, s.url)
                most[s.url] = max(most[s.url], len(running) + len(pending))
                busy += bool(running)
            both_busy = both_busy or busy == 2
            await asyncio.sleep(0.05)
            assert all(not runs.of(j.job_id, "failed") for j in jobs)
    assert most == {s.url: 1 for s in sims}, "never more than one prompt per server"
    assert both_busy, "the two servers ran jobs at the same time"
    servers = runs.by_server()
    assert sorted(servers) == sorted(s.url for s in sims)
    assert sorted(len(v) for v in servers.values()) == [2, 2]


async def test_cancel_while_running_interrupts_the_prompt(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    sim: SimulatorProcess = sim_factory("--node-delay", "EmptyImage=1.5")
    workers([sim.url])
    job = await publish_job(bus, "cpu-smoke", {"width": 32, "height": 32, "color": 7}, record=True)
    started = await runs.wait_for(job.job_id, "started")
    await bus.send(bus.names.cancel(job.job_id), CancelCommand(job_id=job.job_id))
    cancelled = await runs.wait_for(job.job_id, "cancelled", "completed", "failed")
    assert cancelled.kind == "cancelled"
    assert cancelled.prompt_id == started.prompt_id
    async with httpx.AsyncClient(timeout=5) as client:
        history = (await client.get(f"{sim.url}/history/{started.prompt_id}")).json()
    kinds = [m[0] for m in history[started.prompt_id]["status"]["messages"]]
    assert "execution_interrupted" in kinds and "execution_success" not in kinds
    await asyncio.sleep(0.5)
    assert not runs.of(job.job_id, "completed")
    info = await bus.js.consumer_info(
        bus.names.stream("WORK"), bus.names.work_consumer("cpu-smoke")
    )
    assert (info.num_pending, info.num_ack_pending) == (0, 0), "the message was acked"


async def test_cancel_while_pending_deletes_the_prompt_and_reports_it(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    sim: SimulatorProcess = sim_factory("--node-delay", "EmptyImage=2")
    blocker = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "block"},
        },
    }
    async with httpx.AsyncClient(timeout=5) as client:
        posted = await client.post(
            f"{sim.url}/prompt", json={"prompt": blocker, "client_id": "other"}
        )
        blocker_id = posted.json()["prompt_id"]
        workers([sim.url])
        job = await publish_job(
            bus, "cpu-smoke", {"width": 32, "height": 32, "color": 9}, record=True
        )
        ours = None
        for _ in range(100):
            running, pending = await queue_sizes(client, sim.url)
            if pending:
                (ours,) = pending
                break
            await asyncio.sleep(0.05)
        assert ours is not None and running == {blocker_id}, "our prompt waits behind the blocker"
        await bus.send(bus.names.cancel(job.job_id), CancelCommand(job_id=job.job_id))
        cancelled = await runs.wait_for(job.job_id, "cancelled", "completed", "failed")
        assert cancelled.kind == "cancelled"
        assert not runs.of(job.job_id, "started")
        running, pending = await queue_sizes(client, sim.url)
        assert ours not in running | pending
        # the blocker finishes; ours never ran
        for _ in range(100):
            if (await client.get(f"{sim.url}/history/{blocker_id}")).json():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert (await client.get(f"{sim.url}/history/{ours}")).json() == {}


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
