"""Background tasks stop for certain, even when a cancellation is lost on the way."""

from __future__ import annotations

import asyncio

from comfyline.runtime import cancel_and_wait


async def _loop_that_loses_a_cancel(answered: asyncio.Future[int], turns: list[int]) -> None:
    """A sender loop like the progress reporter's: each turn awaits an answer through
    ``wait_for``, as every NATS request does, then waits for more work."""
    more = asyncio.Event()
    while True:
        turns.append(await asyncio.wait_for(answered, 10))
        await more.wait()


async def test_a_cancel_lost_in_wait_for_is_sent_again() -> None:
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[int] = loop.create_future()
    turns: list[int] = []
    task = asyncio.create_task(_loop_that_loses_a_cancel(answered, turns))
    await asyncio.sleep(0)
    # The answer and the cancel in the same iteration: wait_for returns the answer and drops
    # the cancel, so the loop goes on and a plain ``cancel(); await task`` would wait forever.
    answered.set_result(1)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done and turns == [1], "the race no longer loses a cancel on this Python"

    await asyncio.wait_for(cancel_and_wait([task]), 5)
    assert task.cancelled()


async def test_finished_and_failed_tasks_are_fine() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fail())
    finished = asyncio.create_task(asyncio.sleep(0))
    sleeping = asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0.01)
    await cancel_and_wait([failed, finished, sleeping])
    assert failed.done() and finished.done() and sleeping.cancelled()
