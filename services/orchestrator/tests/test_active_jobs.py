"""The owner's ended-jobs count: the orchestrator counts one per terminal event, once."""

from __future__ import annotations

import pytest

from comfyline.contracts import (
    ActiveJobs,
    EndedJobs,
    EventKind,
    JobEvent,
    JobRecord,
    JobState,
    active_jobs_key,
    utcnow,
)
from comfyline.orchestrator import JobStore, UsageBook
from comfyline.orchestrator.usage import release_active
from comfyline.runtime import Bus, Delivery, LastWrites, Retry
from comfyline.testkit.orchestrator import not_ended


async def test_each_terminal_event_releases_one_slot_exactly_once(bus: Bus) -> None:
    kv = await bus.kv(bus.names.bucket("usage"))
    await kv.put(active_jobs_key("u1"), ActiveJobs(owner="u1", count=2).to_bytes())
    last: LastWrites[EndedJobs] = LastWrites()
    await release_active(bus, "u1", seq=10, last=last)
    await release_active(bus, "u1", seq=10, last=last)  # the same event redelivered
    assert (await not_ended(bus, "u1"))[0] == 1
    await release_active(bus, "u1", seq=9)  # an older event, in another process: counted
    assert (await not_ended(bus, "u1"))[0] == 1
    await release_active(bus, "u1", seq=11, last=last)  # its memory is stale: read again
    await release_active(bus, "u1", seq=12, last=last)  # never below zero
    left, ended = await not_ended(bus, "u1")
    assert (left, ended.count, ended.terminal_seq) == (0, 3, 12)


async def test_an_owner_with_no_count_yet_starts_at_zero(bus: Bus) -> None:
    await release_active(bus, "u2", seq=3)
    left, ended = await not_ended(bus, "u2")
    assert (left, ended.count) == (0, 1)


async def test_a_count_from_before_ended_jobs_were_apart_is_continued(bus: Bus) -> None:
    """An active count written when ended jobs were taken off it (up to its terminal_seq)
    keeps its jobs; an event it already counted is not counted again."""
    kv = await bus.kv(bus.names.bucket("usage"))
    old = ActiveJobs(owner="u3", count=2, terminal_seq=40)
    await kv.put(active_jobs_key("u3"), old.to_bytes())
    await release_active(bus, "u3", seq=40)  # counted on the old count already
    assert (await not_ended(bus, "u3"))[0] == 2
    await release_active(bus, "u3", seq=41)
    assert (await not_ended(bus, "u3"))[0] == 1


async def test_an_end_whose_record_is_not_terminal_yet_gives_the_slot_back_and_comes_again(
    bus: Bus,
) -> None:
    """The usage book hears an end whose record (an event from before terminal events carried
    theirs) is not written terminal yet: the slot comes back at once, the usage is counted when
    the event comes again."""
    kv = await bus.kv(bus.names.bucket("usage"))
    await kv.put(active_jobs_key("u5"), ActiveJobs(owner="u5", count=1).to_bytes())
    now = utcnow()
    running = JobRecord(
        id="job_01kax7r2m0a1b2c3d4e5f6g7h9",
        owner="u5",
        model="cpu-smoke",
        template_version=1,
        status=JobState.RUNNING,
        created_at=now,
        updated_at=now,
        input={},
    )
    jobs = await bus.kv(bus.names.bucket("jobs"))
    await jobs.put(running.id, running.to_bytes())
    end = JobEvent(
        job_id=running.id,
        owner="u5",
        model="cpu-smoke",
        kind=EventKind.COMPLETED,
        status=JobState.SUCCEEDED,
    )
    await bus.publish(bus.names.job_event("u5", running.id, "completed"), end)
    sub = await bus.js.pull_subscribe(
        bus.names.job_events_filter(running.id), stream=bus.names.stream("JOBS")
    )
    [msg] = await sub.fetch(1, timeout=5)
    book = UsageBook(bus, JobStore(bus))
    with pytest.raises(Retry, match="not terminal yet"):
        await book.handle(Delivery.of(msg))
    assert (await not_ended(bus, "u5"))[0] == 0
    day = now.date().isoformat()
    assert await book.get("u5", "cpu-smoke", day) is None
    done = running.model_copy(update={"status": JobState.SUCCEEDED, "finished_at": now})
    await jobs.put(running.id, done.to_bytes())
    await book.handle(Delivery.of(msg))  # the same event, redelivered
    total = await book.get("u5", "cpu-smoke", day)
    assert total is not None and (total.jobs, total.succeeded) == (1, 1)
    assert (await not_ended(bus, "u5"))[0] == 0  # its end counted once
