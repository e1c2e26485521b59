"""The event streams' mailbox keeps asyncio.Queue's behaviour where the gateway relies on it."""

from __future__ import annotations

import asyncio

import pytest

from comfyline.gateway.mailbox import Mailbox


async def test_items_come_out_in_order_and_a_full_box_refuses_more() -> None:
    box: Mailbox[int] = Mailbox(3)
    assert box.empty()
    for n in range(3):
        box.put_nowait(n)
    with pytest.raises(asyncio.QueueFull):
        box.put_nowait(3)
    assert not box.empty()
    assert [await box.get() for _ in range(3)] == [0, 1, 2]
    assert box.empty()


async def test_a_waiting_reader_gets_the_next_item_and_a_cancelled_wait_takes_nothing() -> None:
    box: Mailbox[str] = Mailbox(10)
    reader = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.put_nowait("a")
    assert await asyncio.wait_for(reader, 1) == "a"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await box.get()
    box.put_nowait("b")  # after a timed-out wait, nothing is lost or taken
    assert await box.get() == "b"
