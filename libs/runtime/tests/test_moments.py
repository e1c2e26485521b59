"""When a worker's background work goes: at once while a run is marked or once the worker
hurries, else after ``defer_s``."""

from __future__ import annotations

import asyncio
import time

import pytest

from comfyline.runtime import Moments


async def test_work_waits_until_a_run_is_marked() -> None:
    moments = Moments(defer_s=60)
    waiting = asyncio.create_task(moments.wait())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    mark = moments.mark()
    mark.enter()
    await asyncio.wait_for(waiting, 5)
    await asyncio.wait_for(moments.wait(), 5)  # while it is marked: at once


async def test_a_run_that_left_its_mark_no_longer_counts_and_marks_count_once() -> None:
    moments = Moments(defer_s=60)
    first, second = moments.mark(), moments.mark()
    first.enter()
    first.enter()
    second.enter()
    first.leave()
    first.leave()  # (twice: still one run marked)
    await asyncio.wait_for(moments.wait(), 5)
    second.leave()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(moments.wait(), 0.3)


async def test_work_goes_after_its_deferral_counted_from_when_it_was_made() -> None:
    moments = Moments(defer_s=0.3)
    started = time.monotonic()
    await asyncio.wait_for(moments.wait(), 5)
    assert time.monotonic() - started >= 0.25
    started = time.monotonic()
    await asyncio.wait_for(moments.wait(since=time.time() - 10), 5)  # made long ago: at once
    assert time.monotonic() - started < 0.25
    await asyncio.wait_for(Moments(defer_s=0).wait(), 1)


async def test_a_worker_that_hurries_lets_everything_go_from_then_on() -> None:
    moments = Moments(defer_s=60)
    waiting = asyncio.create_task(moments.wait())
    await asyncio.sleep(0.1)
    moments.hurry()
    await asyncio.wait_for(waiting, 5)
    mark = moments.mark()
    mark.enter()
    mark.leave()  # the last run leaving does not close it again
    await asyncio.wait_for(moments.wait(), 5)
