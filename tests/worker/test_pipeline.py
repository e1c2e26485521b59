"""Pipelined dispatch: each server executes one job of ours with the next already waiting in its
own queue. Cancel of either, progress by prompt id, a worker killed holding both, and no job
parked behind a busy server while another one is idle. Cancel and progress run against both
ComfyUIs (the simulator and a real one, ``any_comfyui``) with model-free stock graphs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from comfyline.catalogue import Catalogue
from comfyline.contracts import Binding, CancelCommand, RunEvent
from comfyline.runtime import Bus, NatsSettings, ObjectStore, S3Settings
from comfyline.stack.servers import free_port
from comfyline.testkit.fixtures import stored

from .helpers import (
    RunWatch,
    SimFactory,
    WorkerProcess,
    Workers,
    publish_job,
    queue_ids,
)
from .test_both_servers import SLOW, idle, slow_graph

#: The slow stock graph with its colour as a parameter: every job a fresh colour, so neither
#: ComfyUI answers from its cache (the servers live for the whole test session).
SLOW_COLOUR = SLOW.model_copy(
    update={
        "name": "slow-colour",
        "graph": slow_graph("comfyline/slow_colour"),
        "parameters": {
            "type": "object",
            "properties": {"color": {"type": "integer", "minimum": 0, "maximum": 0xFFFFFF}},
        },
        "bindings": [Binding(param="color", node="1", input="color")],
    }
)

#: The same with eight blurs: a first job that surely still runs while a test starts a server.
LONG_COLOUR = SLOW_COLOUR.model_copy(
    update={"name": "long-colour", "graph": slow_graph("comfyline/long_colour", blurs=8)}
)


def catalogue() -> Catalogue:
    return Catalogue([*Catalogue.builtin(), SLOW_COLOUR, LONG_COLOUR])


async def history(client: httpx.AsyncClient, url: str, prompt_id: str) -> dict[str, Any]:
    """The prompt's history entry once written ({} if it never ran)."""
    for _ in range(100):  # the entry lands just after the last frame
        entry = (await client.get(f"{url}/history/{prompt_id}")).json()
        if entry:
            return dict(entry[prompt_id])
        await asyncio.sleep(0.05)
    return {}


def stamps(entry: dict[str, Any]) -> dict[str, int]:
    """Execution timestamps (ms) by message kind, from a history entry."""
    return {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}


async def one_running_one_waiting(client: httpx.AsyncClient, url: str) -> tuple[str, str]:
    """Wait until the server executes one prompt with another waiting behind it; their job ids
    (from the ``extra_data`` every prompt of ours carries), running first."""
    for _ in range(600):
        data = (await client.get(f"{url}/queue")).json()
        if len(data["queue_running"]) == 1 and len(data["queue_pending"]) == 1:
            [running], [waiting] = data["queue_running"], data["queue_pending"]
            return running[3]["comfyline"]["job_id"], waiting[3]["comfyline"]["job_id"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"never one running and one waiting on {url}")


async def prompt_of(client: httpx.AsyncClient, url: str, job_id: str) -> str:
    """The prompt id of a job of ours in the server's queue."""
    data = (await client.get(f"{url}/queue")).json()
    for entry in data["queue_running"] + data["queue_pending"]:
        if entry[3].get("comfyline", {}).get("job_id") == job_id:
            return str(entry[1])
    raise AssertionError(f"{job_id} is not in the queue of {url}")


@dataclass
class InFlight:
    """Two jobs of ours on one server: ``first`` executing, ``second`` waiting behind it."""

    client: httpx.AsyncClient
    url: str
    first: str
    second: str
    running: str  # first's prompt id
    waiting: str  # second's prompt id


@contextlib.asynccontextmanager
async def two_in_flight(
    bus: Bus,
    workers: Workers,
    url: str,
    also: tuple[str, ...] = (),
    model: str = SLOW_COLOUR.name,
    **settings: Any,
) -> AsyncIterator[InFlight]:
    """A worker on ``url`` (and ``also`` these servers, not up yet) given two slow jobs of fresh
    colours (so neither ComfyUI answers from its cache); the server is left idle afterwards."""
    workers([url, *also], catalogue=catalogue(), models=[model], **settings)
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            for _ in range(2):
                data = {"color": random.randrange(0xFFFFFF)}
                await publish_job(bus, model, data, record=True, validate=False)
            first, second = await one_running_one_waiting(client, url)
            running, waiting = [await prompt_of(client, url, j) for j in (first, second)]
            yield InFlight(client, url, first, second, running, waiting)
        finally:
            await idle(client, url)


async def test_cancel_of_the_waiting_job_deletes_its_prompt_and_the_running_one_goes_on(
    bus: Bus, workers: Workers, runs: RunWatch, any_comfyui: str
) -> None:
    async with two_in_flight(bus, workers, any_comfyui) as on:
        await bus.send(bus.names.cancel(on.second), CancelCommand(job_id=on.second))
        ended = await runs.wait_for(on.second, "cancelled", "completed", "failed")
        assert ended.kind == "cancelled", ended
        assert not runs.starts(on.second), "the waiting job never ran"
        done = await runs.wait_for(on.first, "completed", "failed", timeout=90)
        assert done.kind == "completed" and done.prompt_id == on.running
        assert on.waiting not in set().union(*await queue_ids(on.client, on.url))
        assert await history(on.client, on.url, on.waiting) == {}, "its prompt never executed"


async def test_cancel_of_the_running_job_interrupts_it_and_the_waiting_one_runs_next(
    bus: Bus, workers: Workers, runs: RunWatch, any_comfyui: str
) -> None:
    async with two_in_flight(bus, workers, any_comfyui) as on:
        await runs.wait_for(on.first, "started", timeout=60)
        await bus.send(bus.names.cancel(on.first), CancelCommand(job_id=on.first))
        ended = await runs.wait_for(on.first, "cancelled", "completed", "failed")
        assert ended.kind == "cancelled" and ended.prompt_id == on.running, ended
        done = await runs.wait_for(on.second, "completed", "failed", timeout=90)
        assert done.kind == "completed" and done.prompt_id == on.waiting, done.error
        kinds = stamps(await history(on.client, on.url, on.running))
        assert "execution_interrupted" in kinds and "execution_success" not in kinds
        assert "execution_success" in stamps(await history(on.client, on.url, on.waiting))


async def test_progress_of_two_prompts_in_flight_goes_to_each_ones_job(
    bus: Bus, workers: Workers, runs: RunWatch, any_comfyui: str
) -> None:
    async with two_in_flight(bus, workers, any_comfyui, progress_interval_s=0.0) as on:
        for job_id in (on.first, on.second):
            done = await runs.wait_for(job_id, "completed", "failed", timeout=90)
            assert done.kind == "completed", done.error
        for job_id, prompt_id in {on.first: on.running, on.second: on.waiting}.items():
            events = runs.of(job_id)
            assert {e.prompt_id for e in events if e.kind != "failed"} == {prompt_id}
            progress = [e for e in events if e.kind == "progress"]
            assert progress, "progress was reported"
            [started] = [e for e in events if e.kind == "started"]
            assert all(p.occurred_at >= started.occurred_at for p in progress)
        # The waiting prompt started only when the running one had ended, on ComfyUI's clock.
        ended = stamps(await history(on.client, on.url, on.running))["execution_success"]
        began = stamps(await history(on.client, on.url, on.waiting))["execution_start"]
        assert began >= ended
        # ... and its job reported nothing before it started executing.
        first_of_second = min(e.occurred_at for e in runs.of(on.second))
        assert first_of_second.timestamp() * 1000 >= ended - 50
        # Both went out on the server's one socket, kept open across runs (no handshake per job):
        # the frames of each were told apart by prompt id alone.
        posted_by = {
            (await history(on.client, on.url, prompt_id))["prompt"][3]["client_id"]
            for prompt_id in (on.running, on.waiting)
        }
        assert len(posted_by) == 1, posted_by


async def test_a_job_goes_to_the_idle_server_not_behind_the_busy_one(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    sims = [sim_factory("--node-delay", "EmptyImage=3") for _ in range(2)]
    workers([s.url for s in sims])
    first = await publish_job(bus, "cpu-smoke", {"color": 1})
    started = await runs.wait_for(first.job_id, "started", timeout=30)
    second = await publish_job(bus, "cpu-smoke", {"color": 2})
    other = await runs.wait_for(second.job_id, "started", timeout=30)
    assert other.server != started.server
    assert not runs.of(first.job_id, "completed"), "it started while the first one still ran"


async def test_a_job_goes_to_another_workers_idle_server_not_behind_a_busy_one(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    busy, free = (sim_factory("--node-delay", "EmptyImage=3") for _ in range(2))
    workers([busy.url], worker_id="worker-busy")
    first = await publish_job(bus, "cpu-smoke", {"color": 1})
    await runs.wait_for(first.job_id, "started", timeout=30)
    workers([free.url], worker_id="worker-idle")
    await asyncio.sleep(1.5)  # the new worker is up and has bound its consumers
    second = await publish_job(bus, "cpu-smoke", {"color": 2})
    other = await runs.wait_for(second.job_id, "started", timeout=30)
    assert other.worker_id == "worker-idle" and other.server == free.url
    assert not runs.of(first.job_id, "completed")


async def test_a_job_waiting_behind_a_busy_server_moves_to_one_that_comes_up_idle(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch, any_comfyui: str
) -> None:
    """A job parked behind a busy server (the only one up when it came) does not stay there
    once another server that can run it is idle: its prompt is taken back from the busy
    server's queue, which never executes it, and the job runs on the idle server at once."""
    port = free_port()
    # The first job runs long enough for the new server to start and be seen on a loaded machine
    # (with three blurs the real ComfyUI ended it first once in CI, in 1.8 s).
    also = (f"http://127.0.0.1:{port}",)
    async with two_in_flight(bus, workers, any_comfyui, also, model=LONG_COLOUR.name) as on:
        later = sim_factory("--node-delay", "EmptyImage=0.5", port=port)
        moved = await runs.wait_for(on.second, "started", timeout=60)
        assert moved.server == later.url and moved.prompt_id != on.waiting
        assert not runs.of(on.first, "completed"), "it moved while the first one still ran"
        assert on.waiting not in set().union(*await queue_ids(on.client, on.url))
        done = await runs.wait_for(on.second, "completed", "failed", timeout=90)
        assert done.kind == "completed" and done.outputs, done.error
        first = await runs.wait_for(on.first, "completed", "failed", timeout=90)
        assert first.kind == "completed" and first.prompt_id == on.running
        assert await history(on.client, on.url, on.waiting) == {}, "never executed there"
        assert len(runs.of(on.second, "completed")) == 1


async def test_a_backlog_is_queued_one_ahead_on_every_server(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    sims = [sim_factory("--node-delay", "EmptyImage=0.3") for _ in range(2)]
    workers([s.url for s in sims])
    jobs = [await publish_job(bus, "cpu-smoke", {"color": n}) for n in range(12)]
    most = {s.url: 0 for s in sims}
    async with httpx.AsyncClient(timeout=5) as client:
        while not all(runs.of(j.job_id, "completed") for j in jobs):
            for s in sims:
                running, pending = await queue_ids(client, s.url)
                most[s.url] = max(most[s.url], len(running) + len(pending))
            await asyncio.sleep(0.02)
            assert not any(runs.of(j.job_id, "failed") for j in jobs)
    assert most == {s.url: 2 for s in sims}, "each server held one job ahead"


async def test_a_backlog_there_before_the_worker_reaches_every_server_at_once(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    """No bell rings for jobs already queued: a server that looked for work before its models'
    consumers were bound must not wait for the idle poll or a health check (here 30 s)."""
    sims = [sim_factory("--node-delay", "EmptyImage=0.5") for _ in range(3)]
    jobs = [await publish_job(bus, "cpu-smoke", {"color": n}) for n in range(9)]
    workers([s.url for s in sims], idle_poll_s=30, health_interval_s=30)
    started: set[str] = set()
    async with asyncio.timeout(10):
        while started != {s.url for s in sims}:
            started = {e.server for j in jobs for e in runs.of(j.job_id, "started") if e.server}
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_worker_killed_holding_two_prompts_loses_nothing_and_runs_nothing_twice(
    bus: Bus,
    store: ObjectStore,
    sim_factory: SimFactory,
    workers: Workers,
    runs: RunWatch,
    nats_settings: NatsSettings,
    s3_settings: S3Settings,
    tmp_path: Path,
) -> None:
    sim = sim_factory("--node-delay", "EmptyImage=4")
    proc = WorkerProcess(
        tmp_path / "w.log",
        nats_settings,
        s3_settings,
        bus.names.namespace,
        [sim.url],
        ack_wait_s=3,
        worker_id="worker-k",
    ).start()
    colors = {0x102030: None, 0x405060: None}
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            jobs = [await publish_job(bus, "cpu-smoke", {"color": c}) for c in colors]
            await one_running_one_waiting(client, sim.url)
            running, waiting = [
                str(e[1])
                for key in ("queue_running", "queue_pending")
                for e in (await client.get(f"{sim.url}/queue")).json()[key]
            ]
            proc.signal(signal.SIGKILL)
            await proc.wait(10)
        finally:
            proc.signal(signal.SIGKILL)
        # Restarted under the same id (as a supervisor does): its previous life's waiting
        # prompt is deleted before it can execute; the running one is left to end.
        workers([sim.url], ack_wait_s=3, worker_id="worker-k")
        done: list[RunEvent] = []
        for job in jobs:
            done.append(await runs.wait_for(job.job_id, "completed", timeout=60))
        await asyncio.sleep(4)  # longer than the ack wait: nothing comes back
        assert await history(client, sim.url, waiting) == {}, "the leftover never executed"
        executed = (await client.get(f"{sim.url}/history")).json()
    for job, event, color in zip(jobs, done, colors, strict=True):
        assert len(runs.of(job.job_id, "completed")) == 1
        assert event.attempt == 2
        [out] = event.outputs
        picture = Image.open(io.BytesIO(await stored(store, out.key))).convert("RGB")
        assert picture.getpixel((1, 1)) == ((color >> 16) & 255, (color >> 8) & 255, color & 255)
    # ComfyUI's own record: the killed worker's running prompt plus one run per job, no more.
    assert running in executed and len(executed) == 3, sorted(executed)
    info = await bus.js.consumer_info(
        bus.names.stream("WORK"), bus.names.work_consumer("cpu-smoke")
    )
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
