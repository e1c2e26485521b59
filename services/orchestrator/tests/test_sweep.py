"""The deadline sweep ends jobs whose timers were lost, and leaves every other job alone."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from comfyline.catalogue import Catalogue
from comfyline.contracts import (
    Attempt,
    CancelReply,
    CancelRequest,
    Deadlines,
    ErrorCode,
    JobRecord,
    JobState,
    utcnow,
)
from comfyline.orchestrator import JobStore, Orchestrator, Settings
from comfyline.runtime import Bus
from comfyline.testkit.orchestrator import sample_template, submit, submitted_event, wait_record


def _record(orchestrator: Orchestrator, **update: object) -> JobRecord:
    event = submitted_event("tti-test")
    return orchestrator.dispatcher.new_record(event).model_copy(update=update)


async def test_the_sweep_ends_a_job_whose_queue_timer_was_lost(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    past = utcnow() - timedelta(seconds=30)
    lost = _record(orchestrator, status=JobState.DISPATCHED, queue_deadline_at=past)
    waiting = _record(orchestrator, queue_deadline_at=utcnow() + timedelta(minutes=5))
    store = JobStore(bus)
    for record in (lost, waiting):
        await store.create(record)  # no timer armed for either

    assert await orchestrator.sweep.sweep() == 1
    ended = await wait_record(bus, lost.id, timeout_s=5)
    assert ended.status is JobState.TIMED_OUT
    assert ended.error is not None and ended.error.code is ErrorCode.QUEUE_DEADLINE_EXCEEDED
    still = await store.get(waiting.id)
    assert still is not None and still.record.status is JobState.QUEUED
    # A second pass finds nothing more to do and does not read the ended job again.
    assert await orchestrator.sweep.sweep() == 0


async def test_the_sweep_ends_a_run_past_its_deadline_but_not_one_waiting_for_a_retry(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    now = utcnow()
    overrun = _record(
        orchestrator,
        status=JobState.RUNNING,
        attempts=1,
        attempt_log=[Attempt(number=1, started_at=now - timedelta(seconds=60))],
        queue_deadline_at=now - timedelta(seconds=90),
        run_deadline_at=now - timedelta(seconds=10),
    )
    retrying = _record(
        orchestrator,
        status=JobState.RUNNING,
        attempts=1,
        attempt_log=[
            Attempt(
                number=1,
                started_at=now - timedelta(seconds=60),
                finished_at=now - timedelta(seconds=5),
                outcome="retry:comfyui_unreachable",
            )
        ],
        queue_deadline_at=now + timedelta(minutes=5),
        run_deadline_at=now - timedelta(seconds=10),
    )
    store = JobStore(bus)
    for record in (overrun, retrying):
        await store.create(record)

    assert await orchestrator.sweep.sweep() == 1
    ended = await wait_record(bus, overrun.id, timeout_s=5)
    assert ended.error is not None and ended.error.code is ErrorCode.DEADLINE_EXCEEDED
    still = await store.get(retrying.id)
    assert still is not None and still.record.status is JobState.RUNNING


async def _cancel(bus: Bus, job_id: str) -> None:
    """Cancel once the job's record exists (the submission is consumed asynchronously)."""
    request = CancelRequest(job_id=job_id, owner="*", reason="test")
    for _ in range(100):
        reply = await bus.request(bus.names.cancel_request(), request, CancelReply, timeout=10)
        if reply.code != "not_found":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{job_id} was never recorded")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_thousand_jobs_ended_while_their_timers_are_held_all_end_by_their_timers(
    bus: Bus, catalogue: Catalogue, settings: Settings
) -> None:
    """1,000 jobs of ``tti-short`` (1 s in the queue, no worker), three times over: half are
    cancelled while every timer is armed and nak-delayed. With the sweep off, the timers alone
    must end every other job by its deadline. (When a job's ending purged its timers under the
    consumer, about 3 % of the others were never delivered again and stayed queued for good.)"""
    quiet = settings.model_copy(update={"sweep_interval_s": 3600.0})
    async with Orchestrator(bus, catalogue, quiet):
        for _ in range(3):
            ids = await asyncio.gather(
                *(submit(bus, "tti-short", {"prompt": f"a cat {n}"}) for n in range(1000))
            )
            await asyncio.gather(*(_cancel(bus, j) for j in ids[::2]))
            records = await asyncio.gather(*(wait_record(bus, j, timeout_s=60) for j in ids))
            assert all(r.status.terminal for r in records)
            for record in records[1::2]:
                assert record.status is JobState.TIMED_OUT, record.status


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_thousand_jobs_whose_timers_are_purged_as_they_are_armed_end_by_the_sweep(
    bus: Bus, settings: Settings
) -> None:
    """1,000 jobs of a model with 5 s in the queue and no worker; their queue-deadline timers are
    purged from ``TIMERS`` over and over while they are being armed and nak-delayed, until every
    deadline has passed. No timer is left to fire, so the sweep must end every job, each by
    its deadline + ``sweep_grace_s`` + ``sweep_interval_s`` (+ one pass over the live records
    on a loaded machine)."""
    interval_s, grace_s, pass_s = 2.0, 0.5, 30.0
    five = sample_template("tti-five", deadlines=Deadlines(queue_s=5, run_s=5))
    catalogue = Catalogue([*Catalogue.builtin(), five])
    recheck = Settings.model_fields["no_worker_recheck_s"].default  # not the tests' quick 0.3 s
    swept = settings.model_copy(
        update={
            "sweep_interval_s": interval_s,
            "sweep_grace_s": grace_s,
            "no_worker_recheck_s": recheck,
        }
    )
    stream = bus.names.stream("TIMERS")
    async with Orchestrator(bus, catalogue, swept):
        ids = await asyncio.gather(
            *(submit(bus, "tti-five", {"prompt": f"a cat {n}"}) for n in range(1000))
        )
        subjects = [bus.names.timer("queue_deadline", j) for j in ids]
        purging_until = time.monotonic() + 6.0  # past every deadline: no timer is left to fire
        while time.monotonic() < purging_until:
            for subject in subjects:
                await bus.js.purge_stream(stream, subject=subject)
        store = JobStore(bus)
        records: list[JobRecord] = []
        for _ in range(120):
            found = await asyncio.gather(*(store.get(j) for j in ids))
            records = [f.record for f in found if f is not None]
            if len(records) == len(ids) and all(r.status.terminal for r in records):
                break
            await asyncio.sleep(1.0)

    assert len(records) == 1000 and all(r.status is JobState.TIMED_OUT for r in records)
    bound = timedelta(seconds=grace_s + interval_s + pass_s)
    for record in records:
        assert record.error is not None
        assert record.error.code is ErrorCode.QUEUE_DEADLINE_EXCEEDED
        assert record.queue_deadline_at is not None and record.finished_at is not None
        assert record.queue_deadline_at <= record.finished_at <= record.queue_deadline_at + bound
