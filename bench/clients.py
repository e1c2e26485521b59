"""The two ways the bench runs a job: straight to ComfyUI (``direct.DirectClient``) and through
Comfyline the way a web app does; plus closed-loop clients that run jobs side by side."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from comfyline.catalogue import Catalogue, render, validate_input
from comfyline.contracts import ModelTemplate
from comfyline.worker.folders import saving_into

from .direct import DirectPool
from .stats import steady_rate

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
#: Requests the gateway refused (429/503) or dropped, retried by the bench, since it started.
REFUSED: dict[str, int] = {}


def smoke_input(color: int, size: int) -> dict[str, int]:
    return {"width": size, "height": size, "color": color % 0x1000000}


@functools.cache
def _smoke() -> ModelTemplate:
    return Catalogue.builtin().get("cpu-smoke")


def smoke_graph(color: int, size: int) -> dict[str, Any]:
    """``cpu-smoke`` rendered exactly as Comfyline renders it for the worker, saving into a
    folder of its own as the worker's runs do (a save lists the folder it writes to, so one
    shared by every job gets slower with each job): the direct side pays for no folder that
    Comfyline's side does not."""
    graph = render(_smoke(), validate_input(_smoke(), smoke_input(color, size)))
    return saving_into(graph, f"direct/{uuid.uuid4().hex}", "comfyline")


def api_client(info: dict[str, Any], connections: int = 64) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=info["gateway_url"],
        headers={"Authorization": f"Bearer {info['api_key']}"},
        timeout=120,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def plain_client(connections: int = 64) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=120, limits=limits)


async def call(api: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request to the gateway; a 429 or 503 (a contended counter, a full queue) is retried
    after a short pause, as a client honouring ``Retry-After`` would, and counted in
    ``REFUSED``; so is a request on a kept-alive connection the server had just closed. Any
    other error status raises."""
    for attempt in range(1, 21):
        try:
            reply = await api.request(method, url, **kwargs)
        except httpx.RemoteProtocolError:
            # A kept-alive connection the server closed just as it was reused: not an answer.
            if attempt == 20:
                raise
            REFUSED["disconnected"] = REFUSED.get("disconnected", 0) + 1
            continue
        if reply.status_code not in (429, 503) or attempt == 20:
            break
        REFUSED[str(reply.status_code)] = REFUSED.get(str(reply.status_code), 0) + 1
        await asyncio.sleep(0.02 * attempt)
    reply.raise_for_status()
    return reply


async def wait_job(api: httpx.AsyncClient, job: dict[str, Any]) -> dict[str, Any]:
    while job["status"] not in TERMINAL:
        reply = await call(api, "GET", f"/v1/jobs/{job['id']}", headers={"Prefer": "wait=60"})
        job = reply.json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']}: {job.get('error')}")
    return job


async def submit(
    api: httpx.AsyncClient, model: str, data: dict[str, Any], wait: bool
) -> dict[str, Any]:
    headers = {"Prefer": "wait=60"} if wait else {}
    body = {"model": model, "input": data}
    reply = await call(api, "POST", "/v1/jobs", json=body, headers=headers)
    job: dict[str, Any] = reply.json()
    return job


async def fetch_output(api: httpx.AsyncClient, url: str) -> bytes:
    """GET a presigned output link as a browser would: without the API key (the link is its
    own authorization, and the object store must never see the key)."""
    request = api.build_request("GET", url)
    del request.headers["Authorization"]
    reply = await api.send(request)
    reply.raise_for_status()
    return reply.content


async def via_comfyline(
    api: httpx.AsyncClient, color: int, size: int, download: bool = True
) -> float:
    """``POST /v1/jobs`` with ``Prefer: wait``, then a GET of each output's presigned link:
    every hop (gateway, JetStream, orchestrator, worker, S3). Seconds taken."""
    started = time.perf_counter()
    job = await wait_job(api, await submit(api, "cpu-smoke", smoke_input(color, size), True))
    if download:
        for output in job["outputs"]:
            await fetch_output(api, output["url"])
    return time.perf_counter() - started


@contextlib.asynccontextmanager
async def direct_pool() -> AsyncIterator[DirectPool]:
    """Direct clients (one socket each, kept open) for the baseline side."""
    async with plain_client() as http:
        pool = DirectPool(http)
        try:
            yield pool
        finally:
            await pool.close()


async def direct(comfyui_url: str, pool: DirectPool, color: int, size: int) -> float:
    return await pool.run(comfyui_url, smoke_graph(color, size))


@dataclass(frozen=True)
class Rate:
    """Jobs/s of a closed-loop run: over the whole run (``overall``), and ``steady``: between
    the ``clients``-th completion and the ``clients``-th from last, when every client had a job
    in flight (the start-up and the drain at the end are latency, already measured by (a))."""

    overall: float
    steady: float


async def closed_loop(run_one: Callable[[int], Awaitable[Any]], jobs: int, clients: int) -> Rate:
    """``clients`` loops taking the next of ``jobs`` numbered jobs until none is left."""
    numbers = iter(range(jobs))
    ended: list[float] = []
    started = time.perf_counter()

    async def client() -> None:
        for n in numbers:
            await run_one(n)
            ended.append(time.perf_counter())

    await asyncio.gather(*(client() for _ in range(clients)))
    overall = jobs / (time.perf_counter() - started)
    return Rate(overall, steady_rate(ended, clients) or overall)


_colors = itertools.count(random.randrange(0x1000000))


def fresh_color() -> int:
    """A colour no earlier job of this run used, so ComfyUI's cache never answers."""
    return next(_colors) % 0x1000000
