"""Two gateways, one SIGKILLed while clients follow jobs over SSE on it: each client reconnects
to the other gateway with ``Last-Event-ID`` and misses no event and gets none twice.

``comfyline up --gateways 2`` runs two gateway processes on one NATS. Twelve jobs run one after
another (a second each on the simulated GPU); a client follows each job's stream and one more
follows the owner's stream (``/v1/events``), all on the first gateway, which is SIGKILLed once
every client has had an event. Each client then resumes on the second gateway from its last
event id. What each client saw must be exactly the job's events as a fresh replay lists them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from comfyline.contracts import EVENT_NAMES, TERMINAL_EVENTS
from comfyline.stack import free_port

from .conftest import Stack
from .jobs import stack_info, submit

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(600)]

JOBS = 12
ENDS = {EVENT_NAMES[kind].sse for kind in TERMINAL_EVENTS}


@dataclass
class Follower:
    """One SSE client: every event it got (``(id, type, gateway index)``) and its connections."""

    path: str
    done: Callable[[list[tuple[int, str, int]]], bool]
    events: list[tuple[int, str, int]] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    #: Where the first connection starts (``Last-Event-ID: 0``: every event from the first).
    start: int | None = None

    @property
    def last_id(self) -> int | None:
        return self.events[-1][0] if self.events else self.start


async def _sse(response: httpx.Response) -> AsyncIterator[tuple[int | None, str]]:
    """``(id, event type)`` of each event in an SSE response (comments and ``retry:`` skipped)."""
    event_id: int | None = None
    kind = ""
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = int(line[3:].strip())
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line == "" and kind:
            yield event_id, kind
            event_id, kind = None, ""


async def _follow(http: httpx.AsyncClient, urls: list[str], who: Follower) -> None:
    """Follow ``who.path`` on the first gateway; on a drop, resume on the other one with
    ``Last-Event-ID`` (as EventSource does, pointed at a load balancer's other backend)."""
    gateway = 0
    for _ in range(10):
        headers = {} if who.last_id is None else {"Last-Event-ID": str(who.last_id)}
        who.connections.append(gateway)
        try:
            async with http.stream("GET", urls[gateway] + who.path, headers=headers) as answer:
                if answer.status_code == 204:
                    return  # ended, and nothing after our last event
                assert answer.status_code == 200, await answer.aread()
                async for event_id, kind in _sse(answer):
                    if event_id is not None:
                        who.events.append((event_id, kind, gateway))
                    if who.done(who.events):
                        return
        except httpx.TransportError:
            pass  # the gateway went away mid-stream
        gateway = 1  # the other gateway
        await asyncio.sleep(0.2)
    raise AssertionError(f"{who.path}: gave up after 10 connections")


async def _replay(http: httpx.AsyncClient, url: str, job_id: str) -> list[tuple[int, str]]:
    """Every event of an ended job, from the start, as the gateway lists it."""
    async with http.stream("GET", f"{url}/v1/jobs/{job_id}/events") as answer:
        assert answer.status_code == 200
        return [(event_id, kind) async for event_id, kind in _sse(answer) if event_id is not None]


@pytest.fixture
def two_gateways(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path / "state", free_port(), ["--gateways", "2"])
    # A second on the "GPU" per job: jobs are still running when the gateway dies.
    running.env["COMFYLINE_SIM_ARGS"] = "--node-delay EmptyImage=1.0"
    running.up()
    try:
        yield running
    finally:
        running.down()


async def test_sse_clients_of_a_killed_gateway_resume_on_the_other_missing_nothing(
    two_gateways: Stack,
) -> None:
    info = stack_info(two_gateways)
    urls = info["gateway_urls"]
    assert len(urls) == 2 and set(info["pids"]) >= {"gateway", "gateway-2"}
    auth = {"Authorization": f"Bearer {info['api_key']}"}
    timeout = httpx.Timeout(10, read=60)
    async with httpx.AsyncClient(headers=auth, timeout=timeout) as http:
        ids: list[str] = []

        def all_ended(events: list[tuple[int, str, int]]) -> bool:
            return sum(kind in ENDS for _, kind, _ in events) >= JOBS

        with httpx.Client(base_url=urls[0], headers=auth, timeout=30) as client:
            ids = await asyncio.to_thread(submit, client, JOBS, "gateways")
        # The owner's stream from its first event (a fresh stack: only these jobs' events).
        dashboard = Follower("/v1/events", all_ended, start=0)
        followers = [
            Follower(f"/v1/jobs/{job_id}/events", lambda ev: bool(ev) and ev[-1][1] in ENDS)
            for job_id in ids
        ]
        tasks = [asyncio.create_task(_follow(http, urls, who)) for who in [dashboard, *followers]]
        deadline = time.monotonic() + 60
        while not all(who.events for who in [dashboard, *followers]):
            assert time.monotonic() < deadline, "some client got no event from the first gateway"
            await asyncio.sleep(0.05)
        os.kill(info["pids"]["gateway"], signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*tasks), 300)

        # Every client got exactly the job's events, in order, each once.
        for job_id, who in zip(ids, followers, strict=True):
            full = await _replay(http, urls[1], job_id)
            assert [(i, kind) for i, kind, _ in who.events] == full, job_id
            assert full[-1][1] == "completed"
        resumed = [who for who in followers if who.events[-1][2] == 1]
        # Most jobs were still running when the gateway died; their clients moved over.
        assert len(resumed) >= JOBS // 2, [who.connections for who in followers]
        for who in resumed:
            assert who.connections[:2] == [0, 1] and who.events[0][2] == 0

        # The owner's stream: every event of the twelve jobs, in stream order, each once.
        mine = [(i, kind) for i, kind, _ in dashboard.events]
        expected: list[tuple[int, str]] = []
        for who in followers:
            expected += [(i, kind) for i, kind, _ in who.events]
        assert mine == sorted(expected)  # a fresh stack: the owner has no other jobs
        assert dashboard.connections[:2] == [0, 1]
        assert any(g == 0 for *_, g in dashboard.events) and dashboard.events[-1][2] == 1
    events = sum(len(w.events) for w in followers)
    print(f"\ntwo gateways: {len(resumed)} of {JOBS} job streams and the owner's stream resumed")
    print(f"on the second gateway; {events} job events, none missed, none twice")
