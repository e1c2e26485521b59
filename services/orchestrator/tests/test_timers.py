"""A timer fires when it is due, never before: one that arrives a few milliseconds early waits
them out instead of acting early or round-tripping through the server again."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from nats.aio.msg import Msg

from comfyline.contracts import Timer, utcnow
from comfyline.orchestrator.timers import EARLY_S, Timers
from comfyline.runtime import Bus, Delivery, Retry


def delivery(timer: Timer) -> Delivery:
    return Delivery(msg=Msg(_client=None), subject="timers.x", data=timer.to_bytes())  # type: ignore[arg-type]


async def test_a_timer_a_few_milliseconds_early_fires_at_its_due_time(bus: Bus) -> None:
    timers = Timers(bus)
    fired: list[datetime] = []

    async def handler(timer: Timer) -> None:
        fired.append(utcnow())

    timers.on("queue_deadline", handler)
    due = utcnow() + timedelta(seconds=EARLY_S / 2)
    await timers.handle(delivery(Timer(job_id="job_1", kind="queue_deadline", due_at=due)))
    assert len(fired) == 1 and fired[0] >= due


async def test_a_timer_further_from_due_goes_back_to_the_server(bus: Bus) -> None:
    timers = Timers(bus)
    fired: list[Timer] = []

    async def handler(timer: Timer) -> None:
        fired.append(timer)

    timers.on("queue_deadline", handler)
    due = utcnow() + timedelta(seconds=2)
    with pytest.raises(Retry) as handed_back:
        await timers.handle(delivery(Timer(job_id="job_1", kind="queue_deadline", due_at=due)))
    assert fired == [] and 1.5 < (handed_back.value.delay or 0) <= 2.0
