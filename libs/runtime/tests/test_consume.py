"""A durable consumer's loop: each message is handled as it arrives, a backlog in batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.js.api import StreamConfig

from comfyline.contracts import Names
from comfyline.runtime import Bus, Delivery, NatsSettings, durable_config, run_consumer

FETCH_S = 1.0


@pytest.fixture
async def bus(nats_settings: NatsSettings, names: Names) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_settings, names, "consume-test")
    stream = f"{names.namespace}_CONSUME"
    await bus.js.add_stream(StreamConfig(name=stream, subjects=[f"{names.namespace}.consume.>"]))
    await bus.js.add_consumer(stream, durable_config("c", f"{names.namespace}.consume.>"))
    try:
        yield bus
    finally:
        await bus.js.delete_stream(stream)
        await bus.close()


async def consuming(
    bus: Bus, seen: asyncio.Queue[bytes], concurrency: int = 16
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    async def handler(delivery: Delivery) -> None:
        await asyncio.sleep(0.002)  # a record written, an event published
        await seen.put(delivery.msg.data)

    stop = asyncio.Event()
    stream = f"{bus.names.namespace}_CONSUME"
    # A pull that waited for a batch to fill would hold a message back until it expires.
    loop = run_consumer(
        bus, stream, "c", handler, stop, concurrency=concurrency, fetch_timeout_s=FETCH_S
    )
    return stop, asyncio.create_task(loop)


async def test_each_message_is_handled_as_it_arrives_while_the_consumer_idles(bus: Bus) -> None:
    """After an idle spell, a job's events come a few ms apart (started, progress): each is
    handled at once, none waits for the next one or for a pull request to expire."""
    seen: asyncio.Queue[bytes] = asyncio.Queue()
    stop, task = await consuming(bus, seen, concurrency=32)
    subject = f"{bus.names.namespace}.consume.x"
    try:
        for n in range(3):
            await asyncio.sleep(FETCH_S * 1.1)  # idle: a pull request expired, another waits
            for kind, after_s in (("started", 0.0), ("progress", 0.0015), ("completed", 0.012)):
                await asyncio.sleep(after_s)
                await bus.js.publish(subject, f"{kind}{n}".encode())
            for kind in ("started", "progress", "completed"):
                assert await asyncio.wait_for(seen.get(), FETCH_S * 0.75) == f"{kind}{n}".encode()
    finally:
        stop.set()
        await task


async def test_a_backlog_is_handled_in_full_and_left_acked(bus: Bus) -> None:
    subject = f"{bus.names.namespace}.consume.x"
    for n in range(200):
        await bus.js.publish(subject, f"b{n}".encode())
    seen: asyncio.Queue[bytes] = asyncio.Queue()
    stop, task = await consuming(bus, seen)
    try:
        got = [await asyncio.wait_for(seen.get(), 5) for _ in range(200)]
    finally:
        stop.set()
        await task
    assert sorted(got) == sorted(f"b{n}".encode() for n in range(200))
    info = await bus.js.consumer_info(f"{bus.names.namespace}_CONSUME", "c")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
