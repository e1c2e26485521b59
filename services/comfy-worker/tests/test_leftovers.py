"""Which pending prompts a worker takes for leftovers of a stopped worker."""

from __future__ import annotations

from comfyline.worker.leftovers import stale


def tag(worker_id: str, session: str) -> dict[str, object]:
    return {"comfyline": {"worker_id": worker_id, "session": session, "job_id": "job_1"}}


def test_its_own_previous_life_and_workers_gone_from_the_fleet_are_stale() -> None:
    live = {"w-1", "w-2"}
    assert stale(tag("w-1", "old"), "w-1", "now", live)  # restarted under the same id
    assert stale(tag("w-9", "any"), "w-1", "now", live)  # heartbeat expired


def test_its_own_prompts_live_workers_and_strangers_are_left_alone() -> None:
    live = {"w-1", "w-2"}
    assert not stale(tag("w-1", "now"), "w-1", "now", live)
    assert not stale(tag("w-2", "theirs"), "w-1", "now", live)
    assert not stale({}, "w-1", "now", live)  # someone else's prompt, not Comfyline's
    assert not stale({"comfyline": "odd"}, "w-1", "now", live)
