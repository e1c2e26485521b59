"""An idle server holds a pull request open on the work of the model it ran last: that model's
next job is delivered to it as it is stored, with no bell to hear and no request to send; a
worker that stops takes its held requests back, and gives back at once a job one brought."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from nats.aio.msg import Msg

from comfyline.catalogue import Catalogue
from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import RunJob
from comfyline.runtime import Bus
from comfyline.worker.fetch import WorkFetcher

from .helpers import RunningWorker, RunWatch, SimFactory, Workers, publish_job, queue_ids

SMOKE = {"width": 64, "height": 64, "color": 0x00FF00}


async def holding(
    bus: Bus,
    runs: RunWatch,
    running: RunningWorker,
    model: str = "cpu-smoke",
    data: dict[str, Any] = SMOKE,
) -> None:
    """Run one job of ``model`` on ``running``'s server, then wait until the idle server holds
    a pull request open for the next."""
    first = await publish_job(bus, model, data)
    assert (await runs.wait_for(first.job_id, "completed", "failed")).kind == "completed"
    deadline = time.monotonic() + 10
    while not any(not task.done() for task in running.worker._holds.values()):
        assert time.monotonic() < deadline, "the idle server holds no pull request"
        await asyncio.sleep(0.05)


async def run_once_soon_by_another(
    workers: Workers, sim: SimulatorProcess, runs: RunWatch, job: RunJob, published: float
) -> None:
    """A new worker runs ``job`` once, long before the 60 s ack wait of a job left unacked."""
    workers([sim.url], ack_wait_s=60.0)
    done = await runs.wait_for(job.job_id, "completed", "failed", timeout=30)
    assert done.kind == "completed", done.error
    assert runs.times(job.job_id)["completed"] - published < 20
    assert [e.kind for e in runs.of(job.job_id)] == ["completed"]


async def test_the_next_job_of_the_model_a_server_ran_last_needs_no_bell(
    bus: Bus, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    # Without a held request, an idle server with no bell to hear would look for work again
    # only after its idle poll: 30 s here.
    running = workers([sim.url], idle_poll_s=30.0, hold_pull_s=20.0)
    await holding(bus, runs, running)
    await running.worker.fetcher.stop()  # the doorbell is silent from now on
    published = time.monotonic()
    second = await publish_job(bus, "cpu-smoke", SMOKE)
    done = await runs.wait_for(second.job_id, "completed", "failed", timeout=15)
    assert done.kind == "completed", done.error
    assert runs.times(second.job_id)["completed"] - published < 10


async def test_another_models_job_is_not_held_up_by_a_held_request(
    bus: Bus, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    running = workers([sim.url], idle_poll_s=30.0, hold_pull_s=20.0)
    await holding(bus, runs, running)
    published = time.monotonic()
    other = await publish_job(bus, "tts", {"text": "held"})
    done = await runs.wait_for(other.job_id, "completed", "failed", timeout=15)
    assert done.kind == "completed", done.error
    assert runs.times(other.job_id)["completed"] - published < 10  # the bell, not the poll
    # and the request still open brings the held model's next job, to the same server
    again = await publish_job(bus, "cpu-smoke", SMOKE)
    assert (await runs.wait_for(again.job_id, "completed", "failed")).kind == "completed"
    assert {e.server for e in runs.start_order()} == {sim.url}


async def test_a_server_that_gets_busy_takes_its_held_request_back(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    """Holding for tts, it gets two cpu-smoke jobs of a second each: the first at its bell,
    and, the held request taken back, the second at once into its waiting place (the request,
    left open, would keep that place for 30 s)."""
    sim = sim_factory("--node-delay", "EmptyImage=1.5")
    running = workers([sim.url], idle_poll_s=30.0, hold_pull_s=30.0)
    await holding(bus, runs, running, "tts", {"text": "held"})
    jobs = [await publish_job(bus, "cpu-smoke", SMOKE) for _ in range(2)]
    async with httpx.AsyncClient() as client:
        async with asyncio.timeout(1.2):  # within the first job's run
            while True:
                executing, pending = await queue_ids(client, sim.url)
                if executing and pending:
                    break
                await asyncio.sleep(0.05)
    for job in jobs:
        assert (await runs.wait_for(job.job_id, "completed", "failed")).kind == "completed"


async def test_a_worker_that_stops_takes_its_held_request_back(
    bus: Bus, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    # A request left open after its worker stopped would take the next job and hold it, unacked,
    # for the consumer's ack wait (60 s here); taken back, the job waits for the next worker.
    first_worker = workers([sim.url], ack_wait_s=60.0, hold_pull_s=30.0)
    await holding(bus, runs, first_worker)
    await first_worker.stop()  # quickly: its held request is not waited out
    published = time.monotonic()
    job = await publish_job(bus, "cpu-smoke", SMOKE)
    await asyncio.sleep(1.0)  # where the job would go, it has gone by now
    await run_once_soon_by_another(workers, sim, runs, job, published)


async def test_a_job_a_held_request_brings_as_its_worker_stops_is_run_once(
    bus: Bus, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    """Published as the worker stops: its request either brings the job before it is taken
    back (then the job goes back at once, or runs there within the shutdown's grace) or is
    taken back first; either way the job runs once, soon, not after its ack wait."""
    first_worker = workers([sim.url], ack_wait_s=60.0, hold_pull_s=30.0)
    await holding(bus, runs, first_worker)
    first_worker.stop_event.set()
    published = time.monotonic()
    job = await publish_job(bus, "cpu-smoke", SMOKE)
    await asyncio.wait_for(asyncio.shield(first_worker.task), 30)
    await run_once_soon_by_another(workers, sim, runs, job, published)


async def test_a_held_request_hands_its_job_over_the_moment_it_arrives(bus: Bus) -> None:
    """The job a held request brings is offered to ``take`` in the reply's own callback: taken,
    it is not returned (the request then ends with None); refused, or if the taker fails, it is
    returned as before."""
    fetcher = WorkFetcher(bus, ack_wait_s=30.0)
    await fetcher.bind(Catalogue.builtin().get("cpu-smoke"))
    taken: list[Msg] = []

    def take(msg: Msg) -> bool:
        taken.append(msg)
        return True

    held = asyncio.create_task(fetcher.hold("cpu-smoke", 10.0, take))
    await asyncio.sleep(0.3)  # the request is open on the server
    first = await publish_job(bus, "cpu-smoke", SMOKE)
    assert await asyncio.wait_for(held, 10) is None
    assert [RunJob.from_bytes(m.data).job_id for m in taken] == [first.job_id]
    await taken[0].ack()

    refused = asyncio.create_task(fetcher.hold("cpu-smoke", 10.0, lambda msg: False))
    await asyncio.sleep(0.3)
    second = await publish_job(bus, "cpu-smoke", SMOKE)
    msg = await asyncio.wait_for(refused, 10)
    assert msg is not None and RunJob.from_bytes(msg.data).job_id == second.job_id
    await msg.ack()
    assert len(taken) == 1

    def broken(msg: Msg) -> bool:
        raise RuntimeError("a taker's bug")

    failing = asyncio.create_task(fetcher.hold("cpu-smoke", 10.0, broken))
    await asyncio.sleep(0.3)
    third = await publish_job(bus, "cpu-smoke", SMOKE)
    msg = await asyncio.wait_for(failing, 10)  # returned as usual: the job is not lost
    assert msg is not None and RunJob.from_bytes(msg.data).job_id == third.job_id
    await msg.ack()
