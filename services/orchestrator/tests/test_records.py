"""The job store: compare-and-set changes, trying this process's own last write first."""

from __future__ import annotations

from datetime import timedelta

from comfyline.contracts import EventKind, JobRecord, JobState, utcnow
from comfyline.orchestrator import JobStore
from comfyline.orchestrator.records import Snapshot
from comfyline.orchestrator.transitions import Step, Verdict
from comfyline.runtime import Bus


class CountingStore(JobStore):
    """A store that counts its reads of the bucket."""

    reads = 0

    async def get(self, job_id: str) -> Snapshot | None:
        self.reads += 1
        return await super().get(job_id)


def queued(job_id: str) -> JobRecord:
    now = utcnow()
    return JobRecord(
        id=job_id,
        owner="u1",
        model="cpu-smoke",
        template_version=1,
        status=JobState.QUEUED,
        created_at=now - timedelta(seconds=1),
        updated_at=now,
        input={},
    )


def to(status: JobState, kind: EventKind) -> Step:
    def step(record: JobRecord) -> JobRecord | Verdict:
        return record.model_copy(update={"status": status, "last_event": kind})

    return step


def dispatch(record: JobRecord) -> JobRecord | Verdict:
    if record.status is not JobState.QUEUED:
        return Verdict.DROP
    return record.model_copy(update={"status": JobState.DISPATCHED})


def start(record: JobRecord) -> JobRecord | Verdict:
    if record.status is not JobState.DISPATCHED:
        return Verdict.DROP
    return record.model_copy(update={"status": JobState.RUNNING})


def note(text: str) -> Step:
    def step(record: JobRecord) -> JobRecord | Verdict:
        return record.model_copy(update={"waiting_reason": (record.waiting_reason or "") + text})

    return step


async def test_a_change_after_its_own_write_reads_nothing(bus: Bus) -> None:
    store = CountingStore(bus)
    await store.create(queued("job_01kaxstore000000000000000a"))
    first = await store.change("job_01kaxstore000000000000000a", dispatch)
    second = await store.change("job_01kaxstore000000000000000a", start)
    assert (first.outcome, second.outcome, store.reads) == ("applied", "applied", 0)
    found = await store.get("job_01kaxstore000000000000000a")
    assert found is not None and found.record.status is JobState.RUNNING
    assert found.revision == second.revision


async def test_another_writer_in_between_is_never_overwritten(bus: Bus) -> None:
    job_id = "job_01kaxstore000000000000000b"
    mine, theirs = CountingStore(bus), JobStore(bus)  # two orchestrator replicas
    await mine.create(queued(job_id))
    await theirs.change(job_id, note("theirs;"))
    change = await mine.change(job_id, note("mine;"))  # what it remembers is stale
    assert change.outcome == "applied"
    assert change.record is not None and change.record.waiting_reason == "theirs;mine;"
    assert mine.reads == 1


async def test_a_verdict_is_decided_on_a_fresh_read(bus: Bus) -> None:
    """What this store remembers says queued (start would drop); the bucket says dispatched."""
    job_id = "job_01kaxstore000000000000000c"
    mine, theirs = JobStore(bus), JobStore(bus)
    await mine.create(queued(job_id))
    await theirs.change(job_id, dispatch)
    change = await mine.change(job_id, start)
    assert change.outcome == "applied"
    assert change.record is not None and change.record.status is JobState.RUNNING


async def test_a_finished_job_is_forgotten(bus: Bus) -> None:
    job_id = "job_01kaxstore000000000000000d"
    store = CountingStore(bus)
    await store.create(queued(job_id))
    await store.change(job_id, to(JobState.CANCELLED, EventKind.CANCELLED))
    assert store.reads == 0
    change = await store.change(job_id, lambda r: Verdict.DROP)
    assert (change.outcome, store.reads) == ("drop", 1)
