"""Retries are JetStream redeliveries: attempts are delivery counts; spent work is dead-lettered."""

from __future__ import annotations

import asyncio

from comfyline.contracts import (
    DeadLetter,
    ErrorCode,
    EventKind,
    JobError,
    JobEvent,
    JobRecord,
    JobState,
    RunJob,
)
from comfyline.orchestrator import Orchestrator
from comfyline.runtime import Bus
from comfyline.testkit.orchestrator import (
    Outcome,
    ScriptedWorker,
    event_counts,
    gateway_sent,
    output_of,
    submit,
    until,
    wait_record,
)

TRANSIENT = JobError(code=ErrorCode.COMFY_UNAVAILABLE, message="ComfyUI is restarting")
PERMANENT = JobError(code=ErrorCode.COMFY_VALIDATION, message="bad input", node_id="3")


async def test_a_transient_failure_is_retried_then_succeeds(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """Delivery 1 fails and is naked; delivery 2 succeeds. Two attempts, one ending, no failure."""

    async def flaky(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        await worker.report(job, "started", attempt)
        if attempt == 1:
            await worker.report(
                job,
                "failed",
                attempt,
                error=TRANSIENT,
                final=False,
                gpu_seconds=0.5,
                retry_in_s=0.25,
            )
            between.append(
                await wait_record(
                    bus, job.job_id, lambda r: any(a.finished_at for a in r.attempt_log)
                )
            )
            return "nak"
        await worker.report(job, "completed", attempt, outputs=[output_of(job)], gpu_seconds=1.0)
        return "ack"

    between: list[JobRecord] = []
    worker = ScriptedWorker(bus, "cpu-smoke", flaky, max_deliver=3)
    await worker.start()
    try:
        job_id = await submit(bus, "cpu-smoke", {})
        record = await wait_record(bus, job_id)
    finally:
        await worker.stop()

    assert record.status is JobState.SUCCEEDED
    assert record.attempts == 2
    assert [(a.number, a.outcome) for a in record.attempt_log] == [
        (1, "retry:comfy_unavailable"),
        (2, "succeeded"),
    ]
    assert record.cost.gpu_seconds == 1.5
    assert record.error is None
    assert worker.deliveries == [(job_id, 1), (job_id, 2)]
    counts = await event_counts(bus, job_id)
    assert counts[f"{job_id}.started"] == 2  # one per delivery: <job>:started, <job>:started:2
    assert counts[f"{job_id}.completed"] == 1
    assert f"{job_id}.failed" not in counts
    # The failed attempt is visible: one retrying event with its attempt, code and delay, and
    # between the attempts the job shows no progress and says what it waits for.
    assert counts[f"{job_id}.retrying"] == 1
    msg = await bus.js.get_last_msg(
        bus.names.stream("JOBS"), bus.names.job_event("u1", job_id, "retrying")
    )
    retrying = JobEvent.from_bytes(msg.data or b"")
    assert (retrying.kind, retrying.status, retrying.attempt) == (
        EventKind.RETRYING,
        JobState.RUNNING,
        1,
    )
    assert retrying.error is not None and retrying.error.code is ErrorCode.COMFY_UNAVAILABLE
    assert retrying.error.message == "ComfyUI is restarting" and retrying.retry_in_s == 0.25
    [gap] = between
    assert gap.status is JobState.RUNNING and gap.progress is None
    assert gap.waiting_reason is not None and "comfy_unavailable" in gap.waiting_reason
    assert record.waiting_reason is None


async def test_a_permanent_failure_is_not_retried(bus: Bus, orchestrator: Orchestrator) -> None:
    """A model error ends the job at once with its code; the work is terminated."""

    async def broken(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        await worker.report(job, "started", attempt)
        await worker.report(job, "failed", attempt, error=PERMANENT, final=True)
        return "term"

    worker = ScriptedWorker(bus, "cpu-smoke", broken, max_deliver=3, ack_wait_s=1)
    await worker.start()
    try:
        job_id = await submit(bus, "cpu-smoke", {})
        record = await wait_record(bus, job_id)
        await asyncio.sleep(1.5)  # longer than AckWait: a redelivery would have come by now
    finally:
        await worker.stop()

    assert record.status is JobState.FAILED
    assert record.error is not None
    assert (record.error.code, record.error.node_id) == (ErrorCode.COMFY_VALIDATION, "3")
    assert record.attempts == 1
    assert worker.deliveries == [(job_id, 1)]
    assert (await event_counts(bus, job_id))[f"{job_id}.failed"] == 1


async def read_dead_letters(bus: Bus, model: str) -> list[DeadLetter]:
    """Every dead letter of ``model`` so far."""
    stream = bus.names.stream("DEADLETTER")
    info = await bus.js.stream_info(stream)
    letters: list[DeadLetter] = []
    if info.state.messages == 0:
        return letters
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await bus.js.get_msg(stream, seq=seq)
        if raw.subject == bus.names.dead_letter(model) and raw.data:
            letters.append(DeadLetter.from_bytes(raw.data))
    return letters


async def has_dead_letters(bus: Bus, model: str) -> bool:
    """True once ``model`` has a dead letter."""
    return bool(await read_dead_letters(bus, model))


async def test_exhausted_deliveries_are_dead_lettered(bus: Bus, orchestrator: Orchestrator) -> None:
    """Every delivery naked, past MaxDeliver: dead letter, ``max_attempts_exceeded``, once."""

    async def always_down(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        await worker.report(job, "started", attempt)
        await worker.report(job, "failed", attempt, error=TRANSIENT, final=False)
        return "nak"

    worker = ScriptedWorker(bus, "cpu-smoke", always_down, max_deliver=2, ack_wait_s=1)
    await worker.start()
    try:
        job_id = await submit(bus, "cpu-smoke", {})
        record = await wait_record(bus, job_id, timeout_s=15)
    finally:
        await worker.stop()

    assert record.status is JobState.FAILED
    assert record.error is not None and record.error.code is ErrorCode.MAX_ATTEMPTS_EXCEEDED
    assert record.error.details["last_outcome"] == "retry:comfy_unavailable"
    assert record.attempts == 2
    assert worker.deliveries == [(job_id, 1), (job_id, 2)]
    letters = await read_dead_letters(bus, "cpu-smoke")
    assert [(d.job_id, d.deliveries) for d in letters] == [(job_id, 2)]
    assert (await event_counts(bus, job_id))[f"{job_id}.failed"] == 1
    work = await bus.js.stream_info(bus.names.stream("WORK"))
    assert work.state.messages == 0  # the spent work message was removed


async def test_a_final_failure_and_the_advisory_end_the_job_once(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """On its last delivery the worker reports ``final`` and naks: both paths, one ending."""

    async def last_words(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        await worker.report(job, "started", attempt)
        final = attempt == 2
        await worker.report(job, "failed", attempt, error=TRANSIENT, final=final)
        return "nak"

    worker = ScriptedWorker(bus, "cpu-smoke", last_words, max_deliver=2, ack_wait_s=1)
    await worker.start()
    try:
        job_id = await submit(bus, "cpu-smoke", {})
        record = await wait_record(bus, job_id, timeout_s=15)
        await until(lambda: has_dead_letters(bus, "cpu-smoke"), timeout_s=10)
    finally:
        await worker.stop()

    assert record.status is JobState.FAILED
    assert record.error is not None
    assert record.error.code in (ErrorCode.COMFY_UNAVAILABLE, ErrorCode.MAX_ATTEMPTS_EXCEEDED)
    final = await wait_record(bus, job_id)
    assert final.error == record.error  # whichever came first stayed
    assert (await event_counts(bus, job_id))[f"{job_id}.failed"] == 1


async def test_a_job_whose_worker_died_is_redelivered_and_finishes_once(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """Delivery 1 starts and goes silent (no ack, no report): JetStream redelivers it after
    AckWait, delivery 2 completes, and the job ends once with two attempts."""

    async def dies_first(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        await worker.report(job, "started", attempt)
        if attempt == 1:
            return "none"  # the worker process is gone: nothing more is said or acked
        await worker.report(job, "completed", attempt, outputs=[output_of(job)], gpu_seconds=1.0)
        return "ack"

    worker = ScriptedWorker(bus, "cpu-smoke", dies_first, max_deliver=3, ack_wait_s=1)
    await worker.start()
    try:
        job_id = await submit(bus, "cpu-smoke", {})
        record = await wait_record(bus, job_id, timeout_s=10)
    finally:
        await worker.stop()

    assert record.status is JobState.SUCCEEDED
    assert record.attempts == 2
    assert [(a.number, a.outcome) for a in record.attempt_log] == [(1, None), (2, "succeeded")]
    counts = await event_counts(bus, job_id)
    assert (counts[f"{job_id}.started"], counts[f"{job_id}.completed"]) == (2, 1)


async def test_work_that_runs_out_of_deliveries_before_its_record_still_fails_the_job(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """The gateway sends a job's work with its submission: a worker can spend every delivery
    before the orchestrator has written the record. The advisory waits for the record."""

    async def refuse(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        return "nak"

    worker = ScriptedWorker(bus, "cpu-smoke", refuse, max_deliver=1, ack_wait_s=1)
    await worker.start()
    event, work = gateway_sent("cpu-smoke", {"width": 8, "height": 8, "color": 5})
    try:
        await bus.publish(bus.names.work("cpu-smoke"), work, msg_id=f"{event.job_id}:run")
        await until(lambda: worker.deliveries == [(event.job_id, 1)])
        await asyncio.sleep(0.3)  # the advisory has come and found no record
        subject = bus.names.job_event("u1", event.job_id, "submitted")
        await bus.publish(subject, event, msg_id=f"{event.job_id}:submitted")
        record = await wait_record(bus, event.job_id, timeout_s=10)
    finally:
        await worker.stop()
    assert record.status is JobState.FAILED
    assert record.error is not None and record.error.code is ErrorCode.MAX_ATTEMPTS_EXCEEDED
    assert [d.job_id for d in await read_dead_letters(bus, "cpu-smoke")] == [event.job_id]
