"""Late, repeated and replayed events: states only move forward, every event is published once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from comfyline.catalogue import Catalogue
from comfyline.contracts import (
    Attempt,
    ErrorCode,
    EventKind,
    JobError,
    JobEvent,
    JobRecord,
    JobState,
    PreviewRef,
    Progress,
    RunEvent,
    RunEventKind,
    RunJob,
    utcnow,
)
from comfyline.orchestrator import JobStore, Orchestrator, Settings
from comfyline.runtime import Bus, NatsSettings
from comfyline.testkit.orchestrator import (
    Outcome,
    ScriptedWorker,
    announce_worker,
    event_counts,
    output_of,
    quick_settings,
    submit,
    succeed,
    until,
    wait_record,
)


async def report(bus: Bus, job_id: str, kind: RunEventKind, attempt: int, **fields: Any) -> None:
    """A worker's report, under a fresh message id (as a second worker or a redelivery would)."""
    event = RunEvent(job_id=job_id, kind=kind, attempt=attempt, worker_id="w-late", **fields)
    await bus.publish(bus.names.run_event(job_id, kind), event, msg_id=event.event_id)


async def runs_settled(bus: Bus) -> None:
    """Until the orchestrator has acked every run event published so far."""

    async def settled() -> bool:
        info = await bus.js.consumer_info(bus.names.stream("RUNS"), "orchestrator-runs")
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await until(settled)


async def test_late_and_repeated_run_events_change_nothing(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """After completion: a second completion, a late start, progress and a failure are dropped."""
    worker = ScriptedWorker(bus, "cpu-smoke", succeed())
    await worker.start()
    try:
        job_id = await submit(bus, "cpu-smoke", {})
        done = await wait_record(bus, job_id)
    finally:
        await worker.stop()
    before = await event_counts(bus, job_id)

    await report(bus, job_id, "completed", 1, gpu_seconds=99.0)
    await report(bus, job_id, "started", 1)
    await report(bus, job_id, "started", 2)
    await report(bus, job_id, "progress", 1, progress=Progress(percent=10))
    error = JobError(code=ErrorCode.COMFY_EXECUTION_ERROR, message="late")
    await report(bus, job_id, "failed", 1, error=error, final=True)
    await report(bus, job_id, "cancelled", 1)
    await runs_settled(bus)

    after = await wait_record(bus, job_id)
    assert after.model_dump(exclude={"webhook_deliveries"}) == done.model_dump(
        exclude={"webhook_deliveries"}
    )
    assert await event_counts(bus, job_id) == before


async def test_a_late_start_of_an_old_delivery_is_dropped(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """Delivery 2 is running; delivery 1's repeated start and progress do not move it back."""
    store = JobStore(bus)
    job_id = await submit(bus, "cpu-smoke", {})
    await wait_record(bus, job_id, lambda r: r.status is JobState.QUEUED)
    await report(bus, job_id, "started", 1)  # refused: queued -> running is impossible
    await runs_settled(bus)
    assert (await wait_record(bus, job_id, lambda r: True)).status is JobState.QUEUED

    found = await store.get(job_id)
    assert found is not None
    kv = await store.kv()
    dispatched = found.record.model_copy(update={"status": JobState.DISPATCHED})
    await kv.update(job_id, dispatched.to_bytes(), last=found.revision)
    await report(bus, job_id, "started", 2)
    await wait_record(bus, job_id, lambda r: r.attempts == 2)
    await report(bus, job_id, "started", 1)
    await report(bus, job_id, "progress", 1, progress=Progress(percent=90))
    await runs_settled(bus)

    record = await wait_record(bus, job_id, lambda r: True)
    assert (record.status, record.attempts, record.progress) == (JobState.RUNNING, 2, None)
    counts = await event_counts(bus, job_id)
    assert counts[f"{job_id}.started"] == 1
    assert f"{job_id}.progress" not in counts


async def test_an_ending_written_but_never_announced_is_announced_once(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """A crash between the record write and the publish: the redelivered event replays it."""
    store = JobStore(bus)
    now = utcnow()
    job_id = "job_01kaxreplay0000000000000000"
    record = JobRecord(
        id=job_id,
        owner="u1",
        model="cpu-smoke",
        template_version=1,
        status=JobState.SUCCEEDED,
        created_at=now - timedelta(seconds=5),
        updated_at=now,
        input={},
        attempts=1,
        attempt_log=[Attempt(number=1, started_at=now, finished_at=now, outcome="succeeded")],
        started_at=now,
        finished_at=now,
        last_event=EventKind.COMPLETED,
    )
    await store.create(record)  # written by an orchestrator that then died before publishing

    await report(bus, job_id, "completed", 1)  # the worker's report, redelivered
    await until(lambda: _count(bus, job_id, "completed", 1))
    await report(bus, job_id, "completed", 1)  # and once more
    await runs_settled(bus)

    assert await event_counts(bus, job_id) == {f"{job_id}.completed": 1}


async def _count(bus: Bus, job_id: str, kind: str, n: int) -> bool:
    return (await event_counts(bus, job_id)).get(f"{job_id}.{kind}") == n


async def test_a_dispatch_written_but_never_published_is_replayed(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """Crash after writing ``dispatched``: the redelivered submission publishes event and work."""
    store = JobStore(bus)
    job_id = await submit(bus, "cpu-smoke", {}, job_id="job_01kaxdispatch00000000000000")
    # Queued and saying why (no worker is live): the orchestrator's last write before the
    # crash below, so the record read next is not changed under the test's own write.
    await wait_record(
        bus, job_id, lambda r: r.status is JobState.QUEUED and r.waiting_reason is not None
    )
    # What a dying orchestrator could leave: dispatched in KV, nothing on JOBS or WORK. The
    # submission is still unacked (no worker yet, so it is being re-checked): its redelivery
    # finds the record dispatched and replays the step.
    found = await store.get(job_id)
    assert found is not None
    update = {"status": JobState.DISPATCHED, "last_event": EventKind.DISPATCHED}
    dispatched = found.record.model_copy(update={**update, "dispatched_at": utcnow()})
    kv = await store.kv()
    await kv.update(job_id, dispatched.to_bytes(), last=found.revision)

    worker = ScriptedWorker(bus, "cpu-smoke", succeed())
    await worker.start()
    try:
        record = await wait_record(bus, job_id)
    finally:
        await worker.stop()
    assert record.status is JobState.SUCCEEDED
    counts = await event_counts(bus, job_id)
    assert counts[f"{job_id}.dispatched"] == 1
    assert counts[f"{job_id}.completed"] == 1
    assert worker.deliveries == [(job_id, 1)]


async def test_a_completion_without_its_start_records_and_announces_the_start_first(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """The worker's ``started`` went to another orchestrator (or was lost): ``completed`` alone
    writes the start with the ending, and ``started`` is announced once, before ``completed``."""

    async def complete_only(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        await worker.report(job, "completed", attempt, outputs=[output_of(job)], gpu_seconds=1.0)
        return "ack"

    worker = ScriptedWorker(bus, "cpu-smoke", complete_only)
    await worker.start()
    try:
        job_id = await submit(bus, "cpu-smoke", {})
        record = await wait_record(bus, job_id)
    finally:
        await worker.stop()
    assert record.status is JobState.SUCCEEDED
    [attempt] = record.attempt_log
    assert attempt.started_at is not None and attempt.outcome == "succeeded"
    assert record.started_at == attempt.started_at
    counts = await event_counts(bus, job_id)
    assert (counts[f"{job_id}.started"], counts[f"{job_id}.completed"]) == (1, 1)
    stream = bus.names.stream("JOBS")
    started = await bus.js.get_last_msg(stream, bus.names.job_kind_filter("started", None, job_id))
    completed = await bus.js.get_last_msg(
        stream, bus.names.job_kind_filter("completed", None, job_id)
    )
    assert (started.seq or 0) < (completed.seq or 0)
    assert JobEvent.from_bytes(started.data or b"").status is JobState.RUNNING


async def test_a_restarted_orchestrator_carries_on(
    bus: Bus, catalogue: Catalogue, settings: Settings
) -> None:
    """Jobs accepted by one orchestrator are finished by the next one after it stops."""
    async with Orchestrator(bus, catalogue, settings):
        job_ids = [await submit(bus, "cpu-smoke", {}) for _ in range(5)]
        for job_id in job_ids:
            await wait_record(bus, job_id, lambda r: r.status is JobState.QUEUED)
    worker = ScriptedWorker(bus, "cpu-smoke", succeed())
    await worker.start()
    try:
        async with Orchestrator(bus, catalogue, settings):
            records = [await wait_record(bus, job_id) for job_id in job_ids]
    finally:
        await worker.stop()
    assert [r.status for r in records] == [JobState.SUCCEEDED] * 5
    for job_id in job_ids:
        assert (await event_counts(bus, job_id))[f"{job_id}.completed"] == 1


async def test_progress_is_throttled_and_never_goes_back(
    bus: Bus, catalogue: Catalogue, nats_settings: NatsSettings, namespace: str
) -> None:
    """Within ``progress_min_interval_s`` only the first update is kept and announced; a lower
    percent is dropped; 100 % always passes. Previews are announced, not stored."""
    settings = quick_settings(nats_settings, namespace, progress_min_interval_s=30)
    async with Orchestrator(bus, catalogue, settings):
        job_id = await submit(bus, "cpu-smoke", {})
        await announce_worker(bus, ["cpu-smoke"])
        await wait_record(bus, job_id, lambda r: r.status is JobState.DISPATCHED)
        await report(bus, job_id, "started", 1)
        await report(bus, job_id, "progress", 1, progress=Progress(percent=40))
        await wait_record(bus, job_id, lambda r: r.progress is not None)
        await report(bus, job_id, "progress", 1, progress=Progress(percent=60))  # too soon
        await report(bus, job_id, "progress", 1, progress=Progress(percent=30))  # backwards
        preview = PreviewRef(key=f"previews/u1/{job_id}/1.jpg", content_type="image/jpeg")
        await report(bus, job_id, "preview", 1, preview=preview)
        await report(bus, job_id, "progress", 1, progress=Progress(percent=100))
        await runs_settled(bus)
        record = await wait_record(bus, job_id, lambda r: True)

    assert record.progress is not None and record.progress.percent == 100
    counts = await event_counts(bus, job_id)
    assert (counts[f"{job_id}.progress"], counts[f"{job_id}.preview"]) == (2, 1)
