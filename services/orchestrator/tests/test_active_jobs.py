"""The owner's ended-jobs count: the orchestrator counts one per terminal event, once."""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError

from comfyline.contracts import (
    ActiveJobs,
    EndedJobs,
    active_jobs_key,
    ended_jobs_key,
    jobs_not_ended,
)
from comfyline.orchestrator.usage import release_active
from comfyline.runtime import Bus, LastWrites


async def _not_ended(bus: Bus, owner: str) -> tuple[int, EndedJobs]:
    kv = await bus.kv(bus.names.bucket("usage"))
    try:
        active = ActiveJobs.from_bytes((await kv.get(active_jobs_key(owner))).value or b"{}")
    except KeyNotFoundError:
        active = None
    try:
        ended = EndedJobs.from_bytes((await kv.get(ended_jobs_key(owner))).value or b"{}")
    except KeyNotFoundError:
        ended = EndedJobs(owner=owner)
    return jobs_not_ended(active, ended), ended


async def test_each_terminal_event_releases_one_slot_exactly_once(bus: Bus) -> None:
    kv = await bus.kv(bus.names.bucket("usage"))
    await kv.put(active_jobs_key("u1"), ActiveJobs(owner="u1", count=2).to_bytes())
    last: LastWrites[EndedJobs] = LastWrites()
    await release_active(bus, "u1", seq=10, last=last)
    await release_active(bus, "u1", seq=10, last=last)  # the same event redelivered
    assert (await _not_ended(bus, "u1"))[0] == 1
    await release_active(bus, "u1", seq=9)  # an older event, in another process: counted
    assert (await _not_ended(bus, "u1"))[0] == 1
    await release_active(bus, "u1", seq=11, last=last)  # its memory is stale: read again
    await release_active(bus, "u1", seq=12, last=last)  # never below zero
    left, ended = await _not_ended(bus, "u1")
    assert (left, ended.count, ended.terminal_seq) == (0, 3, 12)


async def test_an_owner_with_no_count_yet_starts_at_zero(bus: Bus) -> None:
    await release_active(bus, "u2", seq=3)
    left, ended = await _not_ended(bus, "u2")
    assert (left, ended.count) == (0, 1)


async def test_a_count_from_before_ended_jobs_were_apart_is_continued(bus: Bus) -> None:
    """An active count written when ended jobs were taken off it (up to its terminal_seq)
    keeps its jobs; an event it already counted is not counted again."""
    kv = await bus.kv(bus.names.bucket("usage"))
    old = ActiveJobs(owner="u3", count=2, terminal_seq=40)
    await kv.put(active_jobs_key("u3"), old.to_bytes())
    await release_active(bus, "u3", seq=40)  # counted on the old count already
    assert (await _not_ended(bus, "u3"))[0] == 2
    await release_active(bus, "u3", seq=41)
    assert (await _not_ended(bus, "u3"))[0] == 1
