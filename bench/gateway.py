"""(c) accepted submissions/s of the gateway alone and (d) its memory per idle SSE stream.

The gateway runs with NATS and S3 only (nothing behind it takes the jobs). The load comes from
a minimal HTTP/1.1 client (raw keep-alive sockets, one request prepared once), so the client
costs the shared CPU as little as possible. Memory is the gateway's resident size read from
``/proc`` before and after opening the streams.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from typing import Any

from .stack import rss_bytes


def _request(url: str, method: str, path: str, api_key: str, body: bytes = b"") -> bytes:
    host = urllib.parse.urlsplit(url).netloc
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}",
        f"Authorization: Bearer {api_key}",
    ]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    else:
        lines.append("Accept: text/event-stream")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


async def _status_and_headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    first, *rest = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in rest:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(first.split()[1]), headers


async def submissions(info: dict[str, Any], total: int, connections: int) -> dict[str, Any]:
    """``total`` ``POST /v1/jobs`` over ``connections`` keep-alive connections; accepted/s."""
    body = json.dumps(
        {"model": "cpu-smoke", "input": {"width": 64, "height": 64, "color": 0}}
    ).encode()
    request = _request(info["gateway_url"], "POST", "/v1/jobs", info["api_key"], body)
    statuses: dict[int, int] = {}
    remaining = iter(range(total))
    accepted_at: list[float] = []

    async def connection() -> None:
        reader, writer = await _connect(info["gateway_url"])
        try:
            for _ in remaining:
                writer.write(request)
                status, headers = await _status_and_headers(reader)
                if "content-length" in headers:
                    await reader.readexactly(int(headers["content-length"]))
                statuses[status] = statuses.get(status, 0) + 1
                if status == 202:
                    accepted_at.append(time.perf_counter())
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    seconds = time.perf_counter() - started
    accepted = statuses.get(202, 0)
    return {
        "submissions": total,
        "connections": connections,
        "accepted": accepted,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": seconds,
        "accepted_per_s": accepted / seconds,
        "accepted_per_s_by_fifth": _rates_by_part(started, accepted_at, 5),
    }


def _rates_by_part(started: float, stamps: list[float], parts: int) -> list[float]:
    """Accepted/s in each of ``parts`` equal shares of the submissions (does the rate hold?)."""
    stamps = sorted(stamps)
    share = len(stamps) // parts
    if share == 0:
        return []
    rates = []
    for n in range(parts):
        begin = started if n == 0 else stamps[n * share - 1]
        rates.append(share / max(stamps[(n + 1) * share - 1] - begin, 1e-9))
    return rates


async def sse_memory(info: dict[str, Any], gateway_pid: int, steps: list[int]) -> dict[str, Any]:
    """Open idle ``GET /v1/events`` streams up to each count of ``steps``; the gateway's resident
    memory growth per open stream at each."""
    request = _request(info["gateway_url"], "GET", "/v1/events", info["api_key"])
    open_streams: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(16)

    refused: dict[int, int] = {}

    async def open_one() -> None:
        async with gate:
            for attempt in range(50):
                reader, writer = await _connect(info["gateway_url"])
                writer.write(request)
                status, _ = await _status_and_headers(reader)
                if status == 200:
                    open_streams.append(writer)
                    return
                writer.close()
                refused[status] = refused.get(status, 0) + 1
                if status not in (429, 503):
                    break
                await asyncio.sleep(0.05 * (attempt + 1))  # as a client honouring Retry-After
            raise RuntimeError(f"GET /v1/events answered {status}")

    await asyncio.sleep(1)
    baseline = rss_bytes(gateway_pid)
    results: dict[str, Any] = {"baseline_rss_mb": baseline / 2**20}
    try:
        for count in steps:
            await asyncio.gather(*(open_one() for _ in range(count - len(open_streams))))
            await asyncio.sleep(2)  # let every stream reach its idle state
            grown = rss_bytes(gateway_pid) - baseline
            results[f"streams_{count}"] = {
                "rss_growth_mb": grown / 2**20,
                "kb_per_stream": grown / count / 1024,
            }
    finally:
        for writer in open_streams:
            writer.close()
    results["refused_then_retried"] = {str(k): v for k, v in sorted(refused.items())}
    return results
