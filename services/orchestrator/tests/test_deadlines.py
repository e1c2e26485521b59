"""Deadlines against real NATS: ``tti-short`` allows 1 s in the queue and 1 s per run."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from nats.aio.msg import Msg

from comfyline.contracts import (
    ErrorCode,
    JobState,
    RunJob,
    Timer,
)
from comfyline.orchestrator import JobStore, Orchestrator, dispatch
from comfyline.runtime import Bus
from comfyline.testkit.orchestrator import (
    Outcome,
    Script,
    ScriptedWorker,
    announce_worker,
    event_counts,
    serve_policy,
    submit,
    submitted_event,
    succeed,
    succeed_within_delay,
    until,
    wait_record,
)


async def test_queue_deadline_with_no_worker_times_the_job_out(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """Queued with no live worker past ``queue_s``: ``timed_out``, ``queue_deadline_exceeded``."""
    job_id = await submit(bus, "tti-short", {"prompt": "a cat"})
    record = await wait_record(bus, job_id, timeout_s=10)

    assert record.status is JobState.TIMED_OUT
    assert record.error is not None and record.error.code is ErrorCode.QUEUE_DEADLINE_EXCEEDED
    assert record.queue_deadline_at is not None and record.finished_at is not None
    assert record.finished_at >= record.queue_deadline_at
    assert await event_counts(bus, job_id) == {
        f"{job_id}.submitted": 1,
        f"{job_id}.waiting": 1,
        f"{job_id}.timed_out": 1,
    }


async def test_queue_deadline_of_dispatched_work_stops_the_worker(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """Dispatched but never started (the worker is busy): timed out, and told to the worker."""
    await serve_policy(bus)
    await announce_worker(bus, ["tti-short"])
    heard = asyncio.Event()

    async def on_cancel(msg: object) -> None:
        heard.set()

    await bus.nc.subscribe(bus.names.all_cancels(), cb=on_cancel)
    job_id = await submit(bus, "tti-short", {"prompt": "a cat"}, enhance=False)
    await wait_record(bus, job_id, lambda r: r.status is JobState.DISPATCHED)
    record = await wait_record(bus, job_id, timeout_s=10)

    assert record.status is JobState.TIMED_OUT
    assert record.error is not None and record.error.code is ErrorCode.QUEUE_DEADLINE_EXCEEDED
    async with asyncio.timeout(5):
        await heard.wait()


async def test_run_deadline_times_out_and_cancels_the_run(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """A run longer than ``run_s``: ``timed_out``/``deadline_exceeded``; the worker hears it."""
    await serve_policy(bus)
    stopped: list[str] = []

    async def hang(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        await worker.report(job, "started", attempt)
        await asyncio.wait_for(worker.cancelled(job.job_id).wait(), timeout=10)
        stopped.append(job.job_id)
        await worker.report(job, "cancelled", attempt)
        return "ack"

    worker = ScriptedWorker(bus, "tti-short", hang)
    await worker.start()
    try:
        job_id = await submit(bus, "tti-short", {"prompt": "a cat"}, enhance=False)
        record = await wait_record(bus, job_id, timeout_s=10)
        await until(lambda: bool(stopped))
    finally:
        await worker.stop()

    assert record.status is JobState.TIMED_OUT
    assert record.error is not None and record.error.code is ErrorCode.DEADLINE_EXCEEDED
    assert record.started_at is not None and record.finished_at is not None
    assert (record.finished_at - record.started_at).total_seconds() >= 1.0
    assert stopped == [job_id]
    # the worker's late "cancelled" report changes nothing
    counts = await event_counts(bus, job_id)
    assert counts[f"{job_id}.timed_out"] == 1
    assert f"{job_id}.cancelled" not in counts
    assert (await wait_record(bus, job_id)).status is JobState.TIMED_OUT


async def test_a_client_deadline_shortens_the_run_limit(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """``deadline_s`` below the model's ``run_s`` (30 s) is the one that applies."""
    await serve_policy(bus)

    async def hang(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        await worker.report(job, "started", attempt)
        await asyncio.wait_for(worker.cancelled(job.job_id).wait(), timeout=10)
        return "ack"

    worker = ScriptedWorker(bus, "tti-test", hang)
    await worker.start()
    try:
        job_id = await submit(bus, "tti-test", {"prompt": "a cat"}, enhance=False, deadline_s=1)
        record = await wait_record(bus, job_id, timeout_s=10)
    finally:
        await worker.stop()
    assert record.status is JobState.TIMED_OUT
    assert record.error is not None and record.error.code is ErrorCode.DEADLINE_EXCEEDED


async def test_a_lost_queue_deadline_is_armed_again(
    bus: Bus, orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The orchestrator died between creating the record and arming its deadline: the
    submission's redelivery arms it, even outside the duplicate window."""
    monkeypatch.setattr(dispatch, "REDRIVE_WINDOW", timedelta(0))
    event = submitted_event("cpu-smoke")
    job_id = event.job_id
    await JobStore(bus).create(orchestrator.dispatcher.new_record(event))  # and then it died
    assert not await orchestrator.timers.pending("queue_deadline", job_id)

    subject = bus.names.job_event("u1", job_id, "submitted")
    await bus.publish(subject, event, msg_id=f"{job_id}:submitted")  # the redelivery

    await until(lambda: orchestrator.timers.pending("queue_deadline", job_id))
    record = await wait_record(bus, job_id, lambda r: True)
    assert record.status is JobState.QUEUED


async def _queue_timers(bus: Bus) -> list[Timer]:
    """Every queue deadline timer armed from now on (a core subscription sees each publish)."""
    armed: list[Timer] = []

    async def on_timer(msg: Msg) -> None:
        timer = Timer.from_bytes(msg.data)
        if timer.kind == "queue_deadline":
            armed.append(timer)

    await bus.nc.subscribe(bus.names.all_timers(), cb=on_timer)
    await bus.nc.flush()
    return armed


@pytest.mark.parametrize("script", [succeed_within_delay(), succeed()], ids=["quick", "started"])
async def test_a_job_that_starts_at_once_costs_no_queue_timer(
    bus: Bus, orchestrator: Orchestrator, script: Script
) -> None:
    """Sent to a live worker and started before the deferral ends: no queue timer is armed."""
    orchestrator.deadlines.defer_s = 0.3
    armed = await _queue_timers(bus)
    worker = ScriptedWorker(bus, "cpu-smoke", script)
    await worker.start()
    try:
        job_id = await submit(bus, "cpu-smoke", {"width": 8, "height": 8, "color": 3})
        record = await wait_record(bus, job_id)
        await asyncio.sleep(0.6)  # past the deferral
    finally:
        await worker.stop()
    assert record.status is JobState.SUCCEEDED
    assert armed == []


async def test_a_dispatched_job_not_started_soon_gets_its_queue_timer(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """Sent to a live worker that does not start it: its queue deadline is armed after the
    deferral, due when the record says; stopping the orchestrator arms what it deferred."""
    orchestrator.deadlines.defer_s = 0.3
    armed = await _queue_timers(bus)
    await announce_worker(bus, ["cpu-smoke"])  # live, but nothing pulls the work
    job_id = await submit(bus, "cpu-smoke", {"width": 8, "height": 8, "color": 4})
    record = await wait_record(bus, job_id, lambda r: r.status is JobState.DISPATCHED)
    await until(lambda: bool(armed), timeout_s=5)
    assert [(t.job_id, t.due_at, t.payload) for t in armed] == [
        (job_id, record.queue_deadline_at, {"attempt": 1})
    ]

    orchestrator.deadlines.defer_s = 600  # deferred well past the stop
    later = await submit(bus, "cpu-smoke", {"width": 8, "height": 8, "color": 5})
    await wait_record(bus, later, lambda r: r.status is JobState.DISPATCHED)
    await asyncio.sleep(0.2)
    assert [t.job_id for t in armed] == [job_id]
    await orchestrator.stop()
    await until(lambda: len(armed) == 2, timeout_s=5)
    assert armed[1].job_id == later
