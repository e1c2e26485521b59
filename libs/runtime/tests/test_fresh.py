"""Fresh outputs against a real nats-server and a real S3 server: kept, read back, refused when
too big, forgotten, and copied to S3 by the archiver (again after S3 comes back)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from comfyline.contracts import utcnow
from comfyline.runtime import Bus, ObjectNotFound, ObjectStore, S3Settings
from comfyline.runtime.fresh import Archiver, FreshOutputs, FreshSettings
from comfyline.testkit.fixtures import stored

KEY = "outputs/owner-1/job-1/0.png"


@pytest.fixture
async def fresh(bus: Bus) -> FreshOutputs:
    outputs = FreshOutputs(
        bus, FreshSettings(max_bytes=64 * 1024, window_s=60, total_bytes=4 << 20)
    )
    await outputs.ensure()
    return outputs


async def test_an_output_is_kept_and_read_back_with_its_type_and_metadata(
    fresh: FreshOutputs,
) -> None:
    until = await fresh.put(KEY, b"\x89PNG bytes", "image/png", {"job-id": "job-1"})
    assert until is not None
    assert utcnow() + timedelta(seconds=55) < until <= utcnow() + timedelta(seconds=60)
    found = await fresh.get(KEY)
    assert found is not None
    assert (found.key, found.data, found.content_type) == (KEY, b"\x89PNG bytes", "image/png")
    assert found.metadata == {"job-id": "job-1"}
    assert await fresh.get("outputs/owner-1/job-1/1.png") is None


async def test_a_second_put_replaces_the_first_and_forget_removes_it(fresh: FreshOutputs) -> None:
    await fresh.put(KEY, b"first", "image/png")
    await fresh.put(KEY, b"second", "image/png")
    found = await fresh.get(KEY)
    assert found is not None and found.data == b"second"
    info = await fresh.bus.js.stream_info(fresh.stream)
    assert info.state.messages == 1
    await fresh.forget(KEY)
    assert await fresh.get(KEY) is None
    await fresh.forget(KEY)  # missing is fine


async def test_what_is_too_big_or_finds_no_room_is_refused(bus: Bus) -> None:
    outputs = FreshOutputs(bus, FreshSettings(max_bytes=1000, total_bytes=1024 * 1024))
    await outputs.ensure()
    assert await outputs.put(KEY, b"x" * 1001, "image/png") is None
    assert await outputs.get(KEY) is None
    # The server's own limit caps the setting.
    big = FreshOutputs(bus, FreshSettings(max_bytes=1 << 30, total_bytes=4 << 20))
    assert big.max_bytes < bus.nc.max_payload
    # No room: the stream's total is reached, the next one is refused (discard new).
    kept = [await outputs.put(f"outputs/o/j/{n}.bin", b"y" * 1000, "x/y") for n in range(1100)]
    assert kept[0] is not None
    assert kept[-1] is None


async def test_the_archiver_copies_each_output_to_s3_under_its_key(
    fresh: FreshOutputs, store: ObjectStore
) -> None:
    archiver = Archiver(fresh, store)
    await archiver.ensure()
    task = asyncio.create_task(archiver.run())
    try:
        for n in range(3):
            data = f"image {n}".encode()
            await fresh.put(f"outputs/o/j/{n}.png", data, "image/png", {"n": str(n)})
        for n in range(3):
            assert await stored(store, f"outputs/o/j/{n}.png") == f"image {n}".encode()
        info = await store.stat("outputs/o/j/2.png")
        assert info.content_type == "image/png"
        assert info.metadata.get("n") == "2"
        # Copied, and still served from the stream while fresh.
        assert await fresh.get("outputs/o/j/0.png") is not None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert archiver.copied == 3


async def test_an_output_kept_while_no_archiver_ran_is_copied_by_the_next_one(
    fresh: FreshOutputs, store: ObjectStore, s3_settings: S3Settings
) -> None:
    """The consumer is durable: what one archiver did not copy (it stopped, or S3 refused),
    another copies."""
    down = ObjectStore(s3_settings.model_copy(update={"endpoint": "127.0.0.1:9"}))
    failing = Archiver(fresh, down, stall_s=0.2)
    await failing.ensure()
    task = asyncio.create_task(failing.run())
    await fresh.put(KEY, b"kept", "image/png")
    try:
        for _ in range(200):
            if failing.stalled:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await down.close()
    assert failing.stalled and failing.copied == 0
    with pytest.raises(ObjectNotFound):
        await store.get_bytes(KEY)
    second = Archiver(fresh, store)
    task = asyncio.create_task(second.run())
    try:
        assert await stored(store, KEY, within_s=40) == b"kept"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_forgotten_output_is_deleted_from_s3_even_if_a_copy_landed_first(
    fresh: FreshOutputs, store: ObjectStore
) -> None:
    """A run that did not succeed forgets what it kept: the archiver removes the key from S3
    whichever came first, its copy or the forgetting."""
    archiver = Archiver(fresh, store)
    await archiver.ensure()
    task = asyncio.create_task(archiver.run())
    try:
        await fresh.put(KEY, b"copied, then forgotten", "image/png")
        await stored(store, KEY)
        await fresh.forget(KEY)
        assert await fresh.get(KEY) is None
        async with asyncio.timeout(10):
            while True:
                try:
                    await store.stat(KEY)
                except ObjectNotFound:
                    break
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_archiver_that_copied_an_older_attempt_copies_the_latest_after(
    fresh: FreshOutputs, store: ObjectStore
) -> None:
    """Archivers run side by side: one holding a retried job's first attempt must not leave
    it in S3 over the second's."""
    await fresh.put(KEY, b"attempt 1", "image/png")
    first = await fresh.latest(KEY)
    await fresh.put(KEY, b"attempt 2", "image/png")
    assert first is not None
    archiver = Archiver(fresh, store)
    await archiver._settle(first[1], first[0])  # as if fetched before attempt 2 was kept
    assert await store.get_bytes(KEY) == b"attempt 2"
