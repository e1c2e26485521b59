"""The bench's delaying proxy (``bench/remote.py``): every byte arrives, each way, and a round
trip through it takes at least the delay it adds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from bench.remote import serve
from comfyline.stack import free_port


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_bytes_pass_both_ways_intact_and_each_round_trip_waits_the_delay() -> None:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    target = echo.sockets[0].getsockname()[1]
    port = free_port()
    proxy = asyncio.create_task(serve(port, "127.0.0.1", target, delay_ms=40))
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            await asyncio.sleep(0.02)
        payload = os.urandom(3 * 1024 * 1024)  # many chunks, each way
        began = time.monotonic()
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        assert time.monotonic() - began >= 0.04  # 20 ms there, 20 ms back
        writer.write(payload)
        writer.write_eof()
        assert await reader.readexactly(len(payload)) == payload
        assert await reader.read() == b""  # the end passes through too
        writer.close()
    finally:
        proxy.cancel()
        await asyncio.gather(proxy, return_exceptions=True)
        echo.close()
