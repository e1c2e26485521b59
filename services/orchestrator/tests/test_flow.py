"""A job's life against real NATS: policy, enhancement (and its fallbacks), dispatch, completion."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from comfyline.contracts import (
    ErrorCode,
    JobEvent,
    JobRecord,
    JobState,
    OutputKind,
    OutputRef,
    RunEvent,
    RunJob,
    new_job_id,
    owner_token,
    utcnow,
)
from comfyline.orchestrator import JobStore, Orchestrator
from comfyline.runtime import Bus
from comfyline.testkit.orchestrator import (
    Outcome,
    ScriptedWorker,
    announce_worker,
    event_counts,
    gateway_sent,
    serve_enhancer,
    serve_policy,
    submit,
    submitted_event,
    succeed,
    succeed_within_delay,
    until,
    wait_record,
)


class Recorder:
    """A worker script that records each job's input, then succeeds."""

    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []
        self.script = succeed(gpu_seconds=2.0)

    async def __call__(self, worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        self.inputs.append(job.input)
        return await self.script(worker, job, attempt)


async def run_one(bus: Bus, model: str, data: dict[str, Any], **submit_args: Any) -> Any:
    """Submit one job to a recording worker; return (record, the inputs the worker saw)."""
    recorder = Recorder()
    worker = ScriptedWorker(bus, model, recorder)
    await worker.start()
    try:
        job_id = await submit(bus, model, data, **submit_args)
        record = await wait_record(bus, job_id)
    finally:
        await worker.stop()
    return record, recorder.inputs


async def test_a_job_with_nothing_to_wait_for_is_created_dispatched(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """No text to screen, a live worker: the first record written already says ``dispatched``
    (one write before the work goes out, not two), and every event is announced once."""
    kv = await bus.kv(bus.names.bucket("jobs"))
    watcher = await kv.watchall()
    record, _ = await run_one(bus, "cpu-smoke", {"width": 8, "height": 8, "color": 1})
    assert record.status is JobState.SUCCEEDED
    statuses: list[JobState] = []
    while JobState.SUCCEEDED not in statuses:
        entry = await watcher.updates(timeout=5)  # type: ignore[no-untyped-call]
        if entry is not None and entry.key == record.id and entry.value:
            statuses.append(JobRecord.from_bytes(entry.value).status)
    await watcher.stop()  # type: ignore[no-untyped-call]
    assert statuses[0] is JobState.DISPATCHED, statuses
    assert JobState.QUEUED not in statuses
    assert record.dispatched_at is not None
    kinds = ("submitted", "dispatched", "started", "completed")
    counts = await event_counts(bus, record.id)
    assert {k: counts.get(f"{record.id}.{k}") for k in kinds} == dict.fromkeys(kinds, 1)


async def test_a_run_that_ended_within_the_started_delay_is_started_and_completed(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """Its worker sent only ``completed``, saying when the run began: the record starts then,
    and ``started`` is announced once, before ``completed``."""
    worker = ScriptedWorker(bus, "cpu-smoke", succeed_within_delay(started_s_ago=0.5))
    await worker.start()
    try:
        job_id = await submit(bus, "cpu-smoke", {"width": 8, "height": 8, "color": 2})
        record = await wait_record(bus, job_id)
    finally:
        await worker.stop()
    assert record.status is JobState.SUCCEEDED
    assert record.started_at is not None and record.finished_at is not None
    ran = (record.finished_at - record.started_at).total_seconds()
    assert 0.5 <= ran < 5, ran
    (attempt,) = record.attempt_log
    assert attempt.started_at == record.started_at and attempt.outcome == "succeeded"
    kinds = ("submitted", "dispatched", "started", "completed")
    counts = await event_counts(bus, record.id)
    assert {k: counts.get(f"{record.id}.{k}") for k in kinds} == dict.fromkeys(kinds, 1)
    stream = bus.names.stream("JOBS")
    seqs = {}
    for kind in ("started", "completed"):
        subject = bus.names.job_event(owner_token(record.owner), record.id, kind)
        seqs[kind] = (await bus.js.get_last_msg(stream, subject)).seq or 0
    assert seqs["started"] < seqs["completed"]


async def test_a_job_runs_from_submission_to_completion(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """Every step is recorded and announced once, the enhanced prompt goes to the worker."""
    policy = await serve_policy(bus)
    enhance = await serve_enhancer(bus)
    record, inputs = await run_one(bus, "tti-test", {"prompt": "a red fox", "steps": 4})

    assert record.status is JobState.SUCCEEDED
    assert record.attempts == 1
    assert record.enhancement is not None
    assert record.enhancement.prompt == "a red fox, detailed"
    assert record.enhancement.fallback_reason is None
    assert inputs == [{"prompt": "a red fox, detailed", "steps": 4}]
    assert [r.texts for r in policy] == [["a red fox"]]
    assert [r.prompt for r in enhance] == ["a red fox"]
    assert (record.cost.gpu_seconds, record.cost.amount) == (2.0, 0.004)
    assert record.started_at is not None and record.finished_at is not None
    assert record.duration_ms is not None and record.duration_ms >= 0
    assert [o.key for o in record.outputs] == [f"outputs/u1/{record.id}/0.png"]
    kinds = ("submitted", "enhanced", "dispatched", "started", "progress", "completed")
    assert await event_counts(bus, record.id) == {f"{record.id}.{k}": 1 for k in kinds}

    day = record.finished_at.date().isoformat()
    for _ in range(100):
        usage = await orchestrator.usage.get("u1", "tti-test", day)
        if usage is not None:
            break
        await asyncio.sleep(0.05)
    assert usage is not None
    assert (usage.jobs, usage.succeeded, usage.failed) == (1, 1, 0)
    assert (usage.gpu_seconds, usage.cost) == (2.0, 0.004)


async def test_enhancer_timeout_keeps_the_original_prompt(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """An enhancer slower than ``enhance_timeout_s`` (0.5 s) is not waited for."""
    await serve_policy(bus)
    enhance = await serve_enhancer(bus, delay_s=3.0)
    record, inputs = await run_one(bus, "tti-test", {"prompt": "a red fox"})

    assert record.status is JobState.SUCCEEDED
    assert len(enhance) == 1
    assert record.enhancement is not None
    assert record.enhancement.fallback_reason == "timeout"
    assert record.enhancement.prompt == record.enhancement.original_prompt == "a red fox"
    assert inputs == [{"prompt": "a red fox"}]
    assert (await event_counts(bus, record.id))[f"{record.id}.enhanced"] == 1


async def test_enhancer_error_keeps_the_original_prompt(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """An error reply is recorded as the reason; the job still runs."""
    await serve_policy(bus)
    await serve_enhancer(bus, error="model is not loaded")
    record, inputs = await run_one(bus, "tti-test", {"prompt": "a cat"})

    assert record.status is JobState.SUCCEEDED
    assert record.enhancement is not None
    assert record.enhancement.fallback_reason == ("error: service_unavailable: model is not loaded")
    assert inputs == [{"prompt": "a cat"}]


async def test_no_enhancer_at_all_keeps_the_original_prompt(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """With no enhancer running, the job runs with its prompt and says why."""
    await serve_policy(bus)
    record, inputs = await run_one(bus, "tti-test", {"prompt": "a cat"})

    assert record.status is JobState.SUCCEEDED
    assert record.enhancement is not None
    assert (record.enhancement.fallback_reason or "").startswith("unavailable")
    assert inputs == [{"prompt": "a cat"}]


async def test_a_job_can_switch_enhancement_off(bus: Bus, orchestrator: Orchestrator) -> None:
    """``enhance: false``: the enhancer is not asked, and the record says it was off."""
    await serve_policy(bus)
    enhance = await serve_enhancer(bus)
    record, inputs = await run_one(bus, "tti-test", {"prompt": "a cat"}, enhance=False)

    assert record.status is JobState.SUCCEEDED
    assert enhance == []
    assert record.enhancement is not None and record.enhancement.fallback_reason == "off"
    assert inputs == [{"prompt": "a cat"}]
    assert f"{record.id}.enhanced" not in await event_counts(bus, record.id)


async def test_a_model_can_switch_enhancement_off(bus: Bus, orchestrator: Orchestrator) -> None:
    """A template with ``enhance: false`` is never enhanced, but its prompt is still checked."""
    policy = await serve_policy(bus)
    enhance = await serve_enhancer(bus)
    record, _ = await run_one(bus, "tti-plain", {"prompt": "a cat"})

    assert record.status is JobState.SUCCEEDED
    assert enhance == []
    assert len(policy) == 1
    assert record.enhancement is not None and record.enhancement.fallback_reason == "off"


async def test_policy_refusal_fails_the_job_before_dispatch(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """Texts beyond the owner's tier end the job ``content_policy``; no work is published."""
    await serve_policy(bus, allowed=False)
    enhance = await serve_enhancer(bus)
    await announce_worker(bus, ["tti-test"])
    job_id = await submit(bus, "tti-test", {"prompt": "something explicit"})
    record = await wait_record(bus, job_id)

    assert record.status is JobState.FAILED
    assert record.error is not None and record.error.code is ErrorCode.CONTENT_POLICY
    assert enhance == []
    assert await event_counts(bus, job_id) == {f"{job_id}.submitted": 1, f"{job_id}.failed": 1}
    work = await bus.js.stream_info(bus.names.stream("WORK"))
    assert work.state.messages == 0


async def test_policy_unavailable_fails_closed(bus: Bus, orchestrator: Orchestrator) -> None:
    """No policy answer after every try: the job fails ``policy_unavailable``, never runs."""
    enhance = await serve_enhancer(bus)
    await announce_worker(bus, ["tti-test"])
    job_id = await submit(bus, "tti-test", {"prompt": "a cat"})
    record = await wait_record(bus, job_id)

    assert record.status is JobState.FAILED
    assert record.error is not None and record.error.code is ErrorCode.POLICY_UNAVAILABLE
    assert enhance == []


async def test_a_job_without_text_skips_policy(bus: Bus, orchestrator: Orchestrator) -> None:
    """``cpu-smoke`` has no text at all: no policy service is needed for it to run."""
    record, inputs = await run_one(bus, "cpu-smoke", {"width": 64, "height": 64})

    assert record.status is JobState.SUCCEEDED
    assert record.enhancement is None
    assert inputs == [{"width": 64, "height": 64}]


async def test_a_job_waits_queued_until_a_worker_appears(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """No live worker: the job stays ``queued`` (nothing dispatched) until one heartbeats."""
    job_id = await submit(bus, "cpu-smoke", {})
    await wait_record(bus, job_id, lambda r: r.status is JobState.QUEUED)
    await asyncio.sleep(1.0)  # several re-checks (no_worker_recheck_s is 0.3 s)
    record = await wait_record(bus, job_id, lambda r: True)
    assert record.status is JobState.QUEUED
    assert await event_counts(bus, job_id) == {f"{job_id}.submitted": 1, f"{job_id}.waiting": 1}
    waiting = await bus.js.get_last_msg(
        bus.names.stream("JOBS"), bus.names.job_event("u1", job_id, "waiting")
    )
    note = JobEvent.from_bytes(waiting.data or b"")
    assert note.status is JobState.QUEUED
    assert note.waiting_reason == "waiting for a worker that serves cpu-smoke: none is live"

    worker = ScriptedWorker(bus, "cpu-smoke", succeed())
    await worker.start()
    try:
        record = await wait_record(bus, job_id)
    finally:
        await worker.stop()
    assert record.status is JobState.SUCCEEDED


async def test_work_the_gateway_sent_makes_the_job_dispatched_and_is_not_sent_again(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """A submission that says the gateway sent its work is created ``dispatched``, though this
    orchestrator sees no live worker yet (the work is stored); it sends no work of its own, and
    the job runs once a worker takes the gateway's."""
    event, work = gateway_sent("cpu-smoke", {"width": 8, "height": 8, "color": 3})
    subject = bus.names.job_event("u1", event.job_id, "submitted")
    await bus.publish(bus.names.work("cpu-smoke"), work, msg_id=f"{event.job_id}:run")
    await bus.publish(subject, event, msg_id=f"{event.job_id}:submitted")
    record = await wait_record(bus, event.job_id, lambda r: r.status is JobState.DISPATCHED)
    assert record.waiting_reason is None
    expected = {f"{event.job_id}.{kind}": 1 for kind in ("submitted", "dispatched")}

    async def announced() -> bool:
        return await event_counts(bus, event.job_id) == expected

    await until(announced)
    info = await bus.js.stream_info(bus.names.stream("WORK"))
    assert (info.state.messages, info.state.last_seq) == (1, 1)  # the gateway's only
    worker = ScriptedWorker(bus, "cpu-smoke", succeed())
    await worker.start()
    try:
        record = await wait_record(bus, event.job_id)
    finally:
        await worker.stop()
    assert record.status is JobState.SUCCEEDED and record.attempts == 1


async def test_an_unknown_model_fails_the_job(bus: Bus, orchestrator: Orchestrator) -> None:
    """A submission for a model the catalogue lacks ends ``unknown_model``."""
    await announce_worker(bus, ["no-such-model"])
    job_id = await submit(bus, "no-such-model", {})
    record = await wait_record(bus, job_id)
    assert record.status is JobState.FAILED
    assert record.error is not None and record.error.code is ErrorCode.UNKNOWN_MODEL


async def test_a_report_that_comes_before_the_record_is_applied_once_it_is_written(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """The work goes out with the record's creation, so a quick run's ``completed`` can reach
    the orchestrator first: it is handed back until the record exists, then applied."""
    await announce_worker(bus, ["cpu-smoke"])
    event = submitted_event("cpu-smoke", {"width": 8, "height": 8, "color": 6})
    job_id = event.job_id
    output = OutputRef(
        index=0,
        key=f"outputs/x/{job_id}/0.png",
        kind=OutputKind.IMAGE,
        content_type="image/png",
        size=123,
    )
    report = RunEvent(
        job_id=job_id,
        kind="completed",
        attempt=1,
        worker_id="w-test",
        outputs=[output],
        gpu_seconds=0.01,
        started_at=utcnow(),
    )
    await bus.publish(bus.names.run_event(job_id, "completed"), report, msg_id=f"{job_id}:1:c")
    await asyncio.sleep(0.3)  # handed back a few times: there is no record yet
    subject = bus.names.job_event(owner_token(event.owner), job_id, "submitted")
    await bus.publish(subject, event, msg_id=f"{job_id}:submitted")

    record = await wait_record(bus, job_id)
    assert record.status is JobState.SUCCEEDED
    assert [o.key for o in record.outputs] == [output.key]
    assert await event_counts(bus, job_id) == {
        f"{job_id}.submitted": 1,
        f"{job_id}.dispatched": 1,
        f"{job_id}.started": 1,
        f"{job_id}.completed": 1,
    }


async def test_an_old_report_for_an_unknown_job_is_dropped(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """A report for a job that has had no record for minutes is dropped, not handed back
    forever."""
    job_id = new_job_id()
    report = RunEvent(
        job_id=job_id,
        kind="completed",
        attempt=1,
        worker_id="w-test",
        occurred_at=utcnow() - timedelta(minutes=10),
    )
    await bus.publish(bus.names.run_event(job_id, "completed"), report, msg_id=f"{job_id}:1:c")
    names = bus.names

    async def settled() -> bool:
        info = await bus.js.consumer_info(names.stream("RUNS"), names.consumer("orchestrator-runs"))
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await until(settled, timeout_s=5)
    info = await bus.js.consumer_info(names.stream("RUNS"), names.consumer("orchestrator-runs"))
    assert info.num_redelivered == 0
    assert await JobStore(bus).get(job_id) is None
