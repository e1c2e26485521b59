"""A run's events: ``started`` goes out in the background, yet always before what follows it."""

from __future__ import annotations

import asyncio

from comfyline.contracts import JobError, OutputRef, Progress, RunEvent, stream_spec, utcnow
from comfyline.runtime import Bus
from comfyline.worker.reporter import RunReporter

JOB = "job_01kaxreporter00000000000000"


async def test_started_is_published_before_progress_and_the_final_event(bus: Bus) -> None:
    await bus.ensure_streams([stream_spec(bus.names, "RUNS")])
    reporter = RunReporter(
        bus,
        job_id=JOB,
        attempt=1,
        worker_id="w1",
        server="http://127.0.0.1:1",
        progress_interval_s=0.0,
    )
    await reporter.started("prompt-1")  # returns without waiting for the ack
    reporter.progress(Progress(percent=50))
    stream = bus.names.stream("RUNS")
    for _ in range(100):  # the progress sender publishes it once started is out
        subjects = bus.names.run_event(JOB, "started").rsplit(".", 1)[0] + ".*"
        info = await bus.js.stream_info(stream, subjects_filter=subjects)
        if len(info.state.subjects or {}) == 2:
            break
        await asyncio.sleep(0.05)
    output = OutputRef(
        index=0, key="outputs/u/j/0.png", kind="image", content_type="image/png", size=1
    )
    await reporter.completed([output], gpu_seconds=0.5)

    seqs: dict[str, int] = {}
    for kind in ("started", "progress", "completed"):
        msg = await bus.js.get_last_msg(stream, bus.names.run_event(JOB, kind))
        seqs[kind] = msg.seq or 0
        assert RunEvent.from_bytes(msg.data or b"").prompt_id == "prompt-1"
    assert seqs["started"] < seqs["completed"]
    assert seqs["started"] < seqs["progress"] < seqs["completed"]


def _reporter(bus: Bus, job_id: str, delay_s: float) -> RunReporter:
    return RunReporter(
        bus,
        job_id=job_id,
        attempt=1,
        worker_id="w1",
        server="http://127.0.0.1:1",
        progress_interval_s=0.0,
        started_delay_s=delay_s,
    )


async def _events(bus: Bus, job_id: str) -> list[RunEvent]:
    """Every run event of ``job_id`` on RUNS, in stream order."""
    stream = bus.names.stream("RUNS")
    info = await bus.js.stream_info(stream)
    found = []
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        msg = await bus.js.get_msg(stream, seq)
        event = RunEvent.from_bytes(msg.data or b"")
        if event.job_id == job_id:
            found.append(event)
    return found


OUTPUT = OutputRef(index=0, key="outputs/u/j/0.png", kind="image", content_type="image/png", size=1)


async def test_a_run_that_succeeds_within_the_started_delay_reports_its_start_with_its_end(
    bus: Bus,
) -> None:
    await bus.ensure_streams([stream_spec(bus.names, "RUNS")])
    job = JOB[:-4] + "fast"
    reporter = _reporter(bus, job, delay_s=5.0)
    before = utcnow()
    await reporter.started("prompt-1")
    reporter.progress(Progress(percent=50))  # waits for the start, which never goes out alone
    await asyncio.sleep(0.1)
    await reporter.completed([OUTPUT], gpu_seconds=0.1)
    await asyncio.sleep(0.2)  # nothing else follows
    (completed,) = await _events(bus, job)
    assert completed.kind == "completed"
    assert completed.started_at is not None and before <= completed.started_at <= utcnow()


async def test_a_longer_run_sends_started_after_the_delay_with_when_it_began(bus: Bus) -> None:
    await bus.ensure_streams([stream_spec(bus.names, "RUNS")])
    job = JOB[:-4] + "slow"
    reporter = _reporter(bus, job, delay_s=0.2)
    await reporter.started("prompt-1")
    began = reporter.started_at
    await asyncio.sleep(0.1)
    assert await _events(bus, job) == [], "started went out before its delay"
    await asyncio.sleep(0.4)
    (started,) = await _events(bus, job)
    assert (started.kind, started.started_at) == ("started", began)
    await reporter.completed([OUTPUT], gpu_seconds=0.5)
    kinds = [(e.kind, e.started_at) for e in await _events(bus, job)]
    assert kinds == [("started", began), ("completed", None)]


async def test_a_run_that_fails_within_the_delay_sends_its_start_first(bus: Bus) -> None:
    await bus.ensure_streams([stream_spec(bus.names, "RUNS")])
    job = JOB[:-4] + "fail"
    reporter = _reporter(bus, job, delay_s=5.0)
    await reporter.started("prompt-1")
    error = JobError(code="comfy_execution_error", message="boom")
    await asyncio.wait_for(reporter.failed(error, final=True, gpu_seconds=0.1), 2.0)
    assert [e.kind for e in await _events(bus, job)] == ["started", "failed"]


async def test_a_completion_right_at_the_end_goes_out_alone_and_first(bus: Bus) -> None:
    """The end frame and the completion back to back (no turn of the loop between them): the
    completion is the only event, its progress and held start are cancelled before it goes
    and have ended once it returns."""
    await bus.ensure_streams([stream_spec(bus.names, "RUNS")])
    reporter = _reporter(bus, JOB, delay_s=5.0)
    await reporter.started("prompt-1")
    began = reporter.started_at
    progress = list(reporter._tasks)
    reporter.progress(Progress(percent=90))
    reporter.run_over()
    await reporter.completed([OUTPUT], gpu_seconds=0.1)
    assert all(task.done() for task in progress)
    await asyncio.sleep(0.2)
    assert [(e.kind, e.started_at) for e in await _events(bus, JOB)] == [("completed", began)]


async def test_a_run_over_before_its_final_event_stops_its_progress_and_holds_its_start(
    bus: Bus,
) -> None:
    """Told the run is over (its end frame) while its outputs are stored, the reporter stops
    its progress at once and takes back a start still waiting out its delay: a completion
    carries when it began; a failure after sends the start first, as it would have."""
    await bus.ensure_streams([stream_spec(bus.names, "RUNS")])
    for end in ("completed", "failed"):
        job = JOB[:-4] + end[:4]
        reporter = _reporter(bus, job, delay_s=5.0)
        await reporter.started("prompt-1")
        began = reporter.started_at
        reporter.progress(Progress(percent=50))
        reporter.run_over()
        await asyncio.sleep(0.2)
        assert await _events(bus, job) == [], "nothing goes out when the run is over"
        if end == "completed":
            await reporter.completed([OUTPUT], gpu_seconds=0.1)
            expected = [("completed", began)]
        else:
            error = JobError(code="storage_unavailable", message="no S3")
            await asyncio.wait_for(reporter.failed(error, final=False, gpu_seconds=0.1), 2.0)
            expected = [("started", began), ("failed", None)]
        await asyncio.sleep(0.2)
        assert [(e.kind, e.started_at) for e in await _events(bus, job)] == expected
