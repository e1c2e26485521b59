"""Streaming uploads against a real S3 server: more of them at once than there are threads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from comfyline.runtime import ObjectStore


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
                    store.put_stream(f"streams/{n}.bin", _slow_chunks(5, 1000), "image/png")
                    for n in range(6)
                )
            ),
            timeout=60,
        )
        assert sizes == [5000] * 6
        for n in range(6):
            assert len(await store.get_bytes(f"streams/{n}.bin")) == 5000
    finally:
        small.shutdown(wait=False, cancel_futures=True)
