"""Uploads against a real S3 server: one PUT on the event loop for what fits in one part,
a streamed multipart upload in a thread for the rest (more of them at once than there are
threads)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from comfyline.runtime import ObjectStore, S3Settings, StorageError

MIB = 1024 * 1024


async def _slow_chunks(n: int, size: int) -> AsyncIterator[bytes]:
    for i in range(n):
        await asyncio.sleep(0.01)
        yield bytes([i % 256]) * size


async def test_more_concurrent_uploads_than_executor_threads_all_finish(store: ObjectStore) -> None:
    """Each upload holds one executor thread while it waits for its next chunk. With every
    thread taken that way, handing over the end of a stream must not need a thread too, or no
    upload ever finishes (a job's output then never completes)."""
    loop = asyncio.get_running_loop()
    small = ThreadPoolExecutor(max_workers=3)
    loop.set_default_executor(small)
    try:
        sizes = await asyncio.wait_for(
            asyncio.gather(
                *(
                    store.put_stream(f"streams/{n}.bin", _slow_chunks(6, MIB), "image/png")
                    for n in range(6)
                )
            ),
            timeout=60,
        )
        assert sizes == [6 * MIB] * 6  # over one part (5 MiB): the threaded multipart upload
        for n in range(6):
            assert len(await store.get_bytes(f"streams/{n}.bin")) == 6 * MIB
    finally:
        small.shutdown(wait=False, cancel_futures=True)


class _NoThreads(ThreadPoolExecutor):
    """A default executor that refuses work: what runs with it installed used no thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        raise AssertionError(f"{getattr(fn, '__name__', fn)} was sent to a thread")


@pytest.mark.parametrize("size", [0, 1000, 5 * MIB])
async def test_what_fits_in_one_part_is_one_put_on_the_event_loop(
    store: ObjectStore, size: int
) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)

    async def chunks() -> AsyncIterator[bytes]:
        for at in range(0, len(data), 256 * 1024):
            yield data[at : at + 256 * 1024]

    key = "outputs/o-1/job 1/ünïcode+name (0).png"  # the signature covers the encoded path
    loop = asyncio.get_running_loop()
    loop.set_default_executor(_NoThreads())
    try:
        stored = await store.put_stream(key, chunks(), "image/png", metadata={"job-id": "j-1"})
        await store.put_bytes("previews/p.jpg", b"\xff\xd8preview", "image/jpeg")
    finally:
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
    assert stored == size
    info = await store.stat(key)
    assert (info.size, info.content_type, info.metadata.get("job-id")) == (size, "image/png", "j-1")
    assert await store.get_bytes(key) == data
    assert await store.get_bytes("previews/p.jpg") == b"\xff\xd8preview"


async def test_a_refused_put_on_the_event_loop_is_a_storage_error(s3_settings: S3Settings) -> None:
    wrong = ObjectStore(s3_settings.model_copy(update={"secret_key": "not-the-secret"}))
    try:
        with pytest.raises(StorageError, match="S3 error"):
            await wrong.put_bytes("outputs/x.png", b"png", "image/png")
    finally:
        await wrong.close()


async def test_an_unreachable_store_is_a_storage_error(s3_settings: S3Settings) -> None:
    from comfyline.stack.servers import free_port

    gone = ObjectStore(s3_settings.model_copy(update={"endpoint": f"127.0.0.1:{free_port()}"}))
    try:
        with pytest.raises(StorageError, match="unreachable"):
            await gone.put_bytes("outputs/x.png", b"png", "image/png")
    finally:
        await gone.close()
