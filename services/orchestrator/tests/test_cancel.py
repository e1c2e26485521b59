"""Cancel in every state, through ``orchestrator.cancel.v1`` as the gateway asks it."""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from comfyline.contracts import CancelReply, CancelRequest, JobState, RunJob
from comfyline.orchestrator import Orchestrator
from comfyline.runtime import Bus
from comfyline.testkit.orchestrator import (
    Outcome,
    ScriptedWorker,
    announce_worker,
    event_counts,
    serve_policy,
    submit,
    succeed,
    until,
    wait_record,
)


async def cancel(bus: Bus, job_id: str, owner: str = "u1") -> CancelReply:
    """Ask as the gateway does."""
    request = CancelRequest(job_id=job_id, owner=owner)
    return await bus.request(bus.names.cancel_request(), request, CancelReply, timeout=5)


class ControlListener:
    """Records every ``control.cancel.<job_id>`` sent."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    async def start(self, bus: Bus) -> None:
        await bus.nc.subscribe(bus.names.all_cancels(), cb=self.on_message)

    async def on_message(self, msg: Msg) -> None:
        self.heard.append(msg.subject.rsplit(".", 1)[-1])

    async def wait_for(self, job_id: str) -> None:
        await until(lambda: job_id in self.heard)


async def test_cancel_a_queued_job(bus: Bus, orchestrator: Orchestrator) -> None:
    """Queued (no worker yet): cancelled at once, and ``control.cancel`` is sent anyway."""
    control = ControlListener()
    await control.start(bus)
    job_id = await submit(bus, "cpu-smoke", {})
    await wait_record(bus, job_id, lambda r: r.status is JobState.QUEUED)

    reply = await cancel(bus, job_id)

    assert (reply.ok, reply.status) == (True, JobState.CANCELLED)
    record = await wait_record(bus, job_id, lambda r: True)
    assert record.status is JobState.CANCELLED and record.cancel_requested
    await control.wait_for(job_id)
    assert await event_counts(bus, job_id) == {
        f"{job_id}.submitted": 1,
        f"{job_id}.waiting": 1,  # no worker is live: it says so, once
        f"{job_id}.cancelled": 1,
    }


async def test_cancel_a_dispatched_job_a_worker_pulls_later(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """Dispatched, not started: cancelled at once; a worker that pulls it later skips it."""
    control = ControlListener()
    await control.start(bus)
    await announce_worker(bus, ["cpu-smoke"])
    job_id = await submit(bus, "cpu-smoke", {})
    await wait_record(bus, job_id, lambda r: r.status is JobState.DISPATCHED)

    reply = await cancel(bus, job_id)
    assert (reply.ok, reply.status) == (True, JobState.CANCELLED)
    await control.wait_for(job_id)

    worker = ScriptedWorker(bus, "cpu-smoke", succeed())
    await worker.start()
    try:
        await until(lambda: job_id in worker.skipped)
    finally:
        await worker.stop()
    record = await wait_record(bus, job_id, lambda r: True)
    assert record.status is JobState.CANCELLED
    assert record.attempts == 0


async def test_cancel_a_running_job_interrupts_its_worker(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """Running: cancelled, the worker hears ``control.cancel`` and stops; its report is dropped."""
    interrupted: list[str] = []

    async def long_run(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        await worker.report(job, "started", attempt)
        await asyncio.wait_for(worker.cancelled(job.job_id).wait(), timeout=10)
        interrupted.append(job.job_id)
        await worker.report(job, "cancelled", attempt, gpu_seconds=0.3)
        return "ack"

    worker = ScriptedWorker(bus, "cpu-smoke", long_run)
    await worker.start()
    try:
        job_id = await submit(bus, "cpu-smoke", {})
        await wait_record(bus, job_id, lambda r: r.status is JobState.RUNNING)
        reply = await cancel(bus, job_id)
        await until(lambda: bool(interrupted))
    finally:
        await worker.stop()

    assert (reply.ok, reply.status) == (True, JobState.CANCELLED)
    assert interrupted == [job_id]
    record = await wait_record(bus, job_id, lambda r: True)
    assert record.status is JobState.CANCELLED
    assert record.error is not None and record.error.code.value == "cancelled"
    counts = await event_counts(bus, job_id)
    assert counts[f"{job_id}.cancelled"] == 1
    assert f"{job_id}.completed" not in counts


async def test_cancel_a_finished_job_is_refused(bus: Bus, orchestrator: Orchestrator) -> None:
    """An ended job: ``job_already_terminal`` (409 at the gateway), state unchanged."""
    worker = ScriptedWorker(bus, "cpu-smoke", succeed())
    await worker.start()
    try:
        job_id = await submit(bus, "cpu-smoke", {})
        await wait_record(bus, job_id)
    finally:
        await worker.stop()

    reply = await cancel(bus, job_id)

    assert (reply.ok, reply.status, reply.code) == (
        False,
        JobState.SUCCEEDED,
        "job_already_terminal",
    )
    assert (await wait_record(bus, job_id)).status is JobState.SUCCEEDED
    assert f"{job_id}.cancelled" not in await event_counts(bus, job_id)


async def test_cancel_twice_cancels_once(bus: Bus, orchestrator: Orchestrator) -> None:
    """Two cancels at once (two gateway replicas): one succeeds, the other is refused."""
    job_id = await submit(bus, "cpu-smoke", {})
    await wait_record(bus, job_id, lambda r: r.status is JobState.QUEUED)

    replies = await asyncio.gather(cancel(bus, job_id), cancel(bus, job_id))

    assert sorted(r.ok for r in replies) == [False, True]
    assert {r.code for r in replies if not r.ok} == {"job_already_terminal"}
    assert (await event_counts(bus, job_id))[f"{job_id}.cancelled"] == 1


async def test_cancel_someone_elses_job_is_not_found(bus: Bus, orchestrator: Orchestrator) -> None:
    """Another owner's job and an unknown job look the same: ``not_found``. An admin may."""
    await serve_policy(bus)
    job_id = await submit(bus, "cpu-smoke", {}, owner="alice")
    await wait_record(bus, job_id, lambda r: r.status is JobState.QUEUED)

    assert (await cancel(bus, job_id, owner="mallory")).code == "not_found"
    assert (await cancel(bus, "job_00000000000000000000000000", owner="alice")).code == "not_found"
    assert (await cancel(bus, "not a job id!", owner="alice")).code == "not_found"
    assert (await wait_record(bus, job_id, lambda r: True)).status is JobState.QUEUED
    admin = await cancel(bus, job_id, owner="*")
    assert (admin.ok, admin.status) == (True, JobState.CANCELLED)
