"""The owner's active-jobs count: the orchestrator releases one slot per terminal event, once."""

from __future__ import annotations

from comfyline.contracts import ActiveJobs, active_jobs_key
from comfyline.orchestrator.usage import release_active
from comfyline.runtime import Bus


async def _count(bus: Bus, owner: str) -> ActiveJobs:
    kv = await bus.kv(bus.names.bucket("usage"))
    entry = await kv.get(active_jobs_key(owner))
    assert entry.value is not None
    return ActiveJobs.from_bytes(entry.value)


async def test_each_terminal_event_releases_one_slot_exactly_once(bus: Bus) -> None:
    kv = await bus.kv(bus.names.bucket("usage"))
    await kv.put(active_jobs_key("u1"), ActiveJobs(owner="u1", count=2).to_bytes())
    await release_active(bus, "u1", seq=10)
    await release_active(bus, "u1", seq=10)  # the same event redelivered
    assert (await _count(bus, "u1")).count == 1
    await release_active(bus, "u1", seq=9)  # an older event: already counted
    assert (await _count(bus, "u1")).count == 1
    await release_active(bus, "u1", seq=11)
    await release_active(bus, "u1", seq=12)  # never below zero
    final = await _count(bus, "u1")
    assert (final.count, final.terminal_seq) == (0, 12)


async def test_an_owner_with_no_count_yet_starts_at_zero(bus: Bus) -> None:
    await release_active(bus, "u2", seq=3)
    assert (await _count(bus, "u2")).count == 0
