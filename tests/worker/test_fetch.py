"""The work fetcher asks only consumers that may hold work: found empty, a consumer is asked again
once its doorbell rings or a sweep names it (redeliveries ring no bell)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from comfyline.catalogue import Catalogue
from comfyline.runtime import Bus
from comfyline.worker.fetch import WorkFetcher

MODELS = ("cpu-smoke", "tts")
SWEEP_S = 2.0


class CountingFetcher(WorkFetcher):
    """A fetcher that counts the pull requests it sends, per consumer."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus, ack_wait_s=30.0, sweep_s=SWEEP_S)
        self.asked: list[tuple[str, str]] = []

    async def _next(self, model: str, lane: str, wait_s: float = 0.0) -> Any:
        self.asked.append((model, lane))
        return await super()._next(model, lane, wait_s)


@pytest.fixture
async def fetcher(bus: Bus) -> AsyncIterator[CountingFetcher]:
    fetcher = CountingFetcher(bus)
    catalogue = Catalogue.builtin()
    for model in MODELS:
        await fetcher.bind(catalogue.get(model))
    await fetcher.start()
    try:
        yield fetcher
    finally:
        await fetcher.stop()


async def publish(bus: Bus, fetcher: WorkFetcher, model: str, *numbers: int) -> None:
    """Publish work for ``model`` and wait until the fetcher's doorbell heard it."""
    with fetcher.bell.listen([model]) as ring:
        for n in numbers:
            await bus.js.publish(bus.names.work(model), f"job {n}".encode())
        async with asyncio.timeout(5):
            await ring.wait()


async def test_an_empty_consumer_is_not_asked_again_until_its_bell_rings(
    bus: Bus, fetcher: CountingFetcher
) -> None:
    assert await fetcher.next_for(MODELS) is None
    assert len(fetcher.asked) == 4  # two models, two lanes each
    fetcher.asked.clear()
    for _ in range(3):
        assert await fetcher.next_for(await fetcher.may_have_work(MODELS)) is None
    assert fetcher.asked == []

    await publish(bus, fetcher, "tts", 1)
    assert await fetcher.may_have_work(MODELS) == ["tts"]
    msg = await fetcher.next_for(await fetcher.may_have_work(MODELS))
    assert msg is not None and msg.data == b"job 1"
    await msg.ack()
    assert fetcher.asked == [("tts", "interactive")]
    # It was the last one waiting (num_pending 0): nothing is asked for after it.
    assert await fetcher.may_have_work(MODELS) == []


async def test_a_backlog_is_fetched_to_its_end(bus: Bus, fetcher: CountingFetcher) -> None:
    await publish(bus, fetcher, "cpu-smoke", 0, 1, 2)
    got = []
    while msg := await fetcher.next_for(await fetcher.may_have_work(MODELS)):
        got.append(msg.data)
        await msg.ack()
    assert got == [b"job 0", b"job 1", b"job 2"]
    assert await fetcher.may_have_work(MODELS) == []


async def test_a_redelivery_is_found_by_the_next_sweep(bus: Bus, fetcher: CountingFetcher) -> None:
    await publish(bus, fetcher, "tts", 7)
    msg = await fetcher.next_for(MODELS)
    assert msg is not None
    assert await fetcher.next_for(MODELS) is None  # every consumer found empty
    await msg.nak(delay=0.05)  # comes back without a bell
    await asyncio.sleep(0.1)
    assert await fetcher.may_have_work(MODELS) == []
    await asyncio.sleep(SWEEP_S)
    fetcher.asked.clear()
    # The sweep reads which work subjects hold messages: only that lane is asked, not all four.
    assert await fetcher.may_have_work(MODELS) == ["tts"]
    again = await fetcher.next_for(await fetcher.may_have_work(MODELS))
    assert again is not None and again.data == b"job 7"
    assert again.metadata.num_delivered == 2
    assert fetcher.asked == [("tts", "interactive")]
    await again.ack()


async def test_a_job_the_bell_announced_is_fetched_before_the_order_is_asked(
    bus: Bus, fetcher: CountingFetcher
) -> None:
    ordered: list[list[str]] = []

    async def order(models: list[str]) -> list[str]:
        ordered.append(models)
        return list(reversed(models))

    await publish(bus, fetcher, "tts", 3)
    msg = await fetcher.next_for(MODELS, [("tts", "interactive")], rotate=False, order=order)
    assert msg is not None and msg.data == b"job 3"
    await msg.ack()
    assert ordered == []  # (affinity reads the stream for it: not on an announced job's path)
    assert await fetcher.next_for(MODELS, rotate=False, order=order) is None
    assert ordered == [list(MODELS)]
    # in the order given (tts's interactive lane was emptied by the job just taken)
    assert fetcher.asked[1:] == [
        ("cpu-smoke", "interactive"),
        ("tts", "batch"),
        ("cpu-smoke", "batch"),
    ]
