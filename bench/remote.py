"""A TCP proxy that puts a network's distance between two local processes.

The bench's S3 is a SeaweedFS on this machine, a fraction of a millisecond from every service.
A GPU server's worker usually reaches its object store across a network (another zone, another
cloud): ``--s3-delay-ms N`` starts this proxy in front of the bench's S3 for the services (not
for the bench's clients, whose links stay on the direct endpoint), so every byte between a
service and S3 arrives ``N / 2`` ms after it was sent, each way: a request's round trip costs
``N`` ms more, as it would over such a network, and a transfer keeps its bandwidth (each chunk is
delayed, not the ones after it).

    python -m bench.remote --port P --to 127.0.0.1:9000 --delay-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk written ``delay`` s after it was read."""
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await chunks.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            chunks.put_nowait((time.monotonic() + delay, data))
            if not data:  # the end, passed on as an end of this direction only
                break
        await delivering
    except OSError:
        delivering.cancel()


async def serve(port: int, host: str, target_port: int, delay_ms: float) -> None:
    delay = delay_ms / 2000

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(host, target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            _pipe(client_r, server_w, delay),
            _pipe(server_r, client_w, delay),
            return_exceptions=True,
        )
        for writer in (server_w, client_w):  # both directions have ended
            with contextlib.suppress(OSError):
                writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"delaying 127.0.0.1:{port} -> {host}:{target_port} by {delay_ms} ms", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.remote", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--to", required=True, help="host:port")
    parser.add_argument("--delay-ms", type=float, required=True, help="added per round trip")
    args = parser.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, host, int(port), args.delay_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
