"""Live progress over SSE and WebSocket, against a gateway behind a real uvicorn."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from comfyline.contracts import EventKind, Progress
from comfyline.gateway import Settings, create_app
from comfyline.runtime import Bus
from comfyline.testkit.orchestrator import until

from .conftest import ADMIN, Orchestrator, Served, new_key, serve


@dataclass
class Sse:
    """One parsed SSE message."""

    id: int | None = None
    event: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class SseReader:
    """Reads SSE messages (and comment lines) from one streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines().__aiter__()
        self.comments: list[str] = []

    async def take(self, count: int | None = None) -> list[Sse]:
        """``count`` messages, or every message until the stream ends."""
        events: list[Sse] = []
        current = Sse()
        async with asyncio.timeout(15):
            async for line in self.lines:
                if line.startswith(":"):
                    self.comments.append(line)
                elif line.startswith("id: "):
                    current.id = int(line[4:])
                elif line.startswith("event: "):
                    current.event = line[7:]
                elif line.startswith("data: "):
                    current.data = json.loads(line[6:])
                elif line == "" and current.event:
                    events.append(current)
                    current = Sse()
                    if count is not None and len(events) >= count:
                        break
        return events


async def submit(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await http.post(
        "/v1/jobs", json={"model": "cpu-smoke", "input": {}}, headers=headers
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


async def test_sse_typed_events_ids_heartbeats_and_end_after_terminal(
    served: Served, orchestrator: Orchestrator
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        alice = await new_key(http, "alice")
        job = await submit(http, alice)
        # the browser's way in: the events link with its token, no header
        async with http.stream("GET", job["links"]["events"]) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = SseReader(response)
            first = await reader.take(1)
            await asyncio.sleep(0.8)  # idle: heartbeats
            await orchestrator.run(job["id"], progress_steps=2)
            rest = await reader.take()
    comments = reader.comments
    events = first + rest
    assert [e.event for e in events] == ["queued", "started", "progress", "progress", "completed"]
    ids = [e.id or 0 for e in events]
    assert all(ids) and ids == sorted(ids)
    assert events[2].data["progress"]["step"] == 1 and events[2].data["status"] == "running"
    done = events[-1].data
    assert done["status"] == "succeeded" and "X-Amz-Signature" in done["outputs"][0]["url"]
    assert comments, "heartbeat comments while idle"
    # the stream ended by itself after the terminal event (we read to its end)


async def test_last_event_id_replays_exactly_what_was_missed(
    served: Served, orchestrator: Orchestrator
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        alice = await new_key(http, "alice")
        job = await submit(http, alice)
        record = await orchestrator.queued(job["id"])
        seqs = [await orchestrator.event(record, EventKind.STARTED)]
        for step in range(1, 5):
            seqs.append(
                await orchestrator.event(
                    record,
                    EventKind.PROGRESS,
                    step,
                    progress=Progress(percent=step * 20, step=step, steps=5),
                )
            )
        url = f"/v1/jobs/{job['id']}/events"
        headers = {**alice, "Last-Event-ID": str(seqs[1])}
        async with http.stream("GET", url, headers=headers) as response:
            reader = SseReader(response)
            replayed = await reader.take(3)
            await orchestrator.complete(record)
            live = await reader.take()
        assert [e.id for e in replayed] == seqs[2:]
        assert [e.event for e in replayed] == ["progress", "progress", "progress"]
        assert [e.event for e in live] == ["completed"]
        # a reconnect after the terminal event is told to stop (204: EventSource gives up)
        after_end = await http.get(url, headers={**alice, "Last-Event-ID": str(live[0].id)})
        assert after_end.status_code == 204
        # from the start: the whole history, ending with the terminal event
        async with http.stream("GET", url, headers=alice) as response:
            everything = await SseReader(response).take()
        assert everything[0].event == "queued" and everything[-1].event == "completed"


async def test_events_token_is_for_one_job_only(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        alice = await new_key(http, "alice")
        one, two = await submit(http, alice), await submit(http, alice)
        token = one["links"]["events"].split("token=")[1]
        wrong = await http.get(f"/v1/jobs/{two['id']}/events", params={"token": token})
        assert wrong.status_code == 403 and wrong.json()["code"] == "forbidden"
        as_key = await http.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert as_key.status_code == 401
        forged = await http.get(
            f"/v1/jobs/{one['id']}/events", params={"token": token[:-4] + "AAAA"}
        )
        assert forged.status_code == 401
        dashboard = await http.get("/v1/events", params={"token": token})
        assert dashboard.status_code == 403
        none = await http.get(f"/v1/jobs/{one['id']}/events")
        assert none.status_code == 401 and none.headers["www-authenticate"].startswith("Bearer")


async def test_dashboard_stream_carries_all_of_the_owners_jobs(
    served: Served, orchestrator: Orchestrator
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        alice = await new_key(http, "alice")
        bob = await new_key(http, "bob")
        token = (await http.post("/v1/events/token", headers=alice)).json()
        async with http.stream("GET", "/v1/events", params={"token": token["token"]}) as response:
            assert response.status_code == 200
            await asyncio.sleep(0.2)
            one, two = await submit(http, alice), await submit(http, alice)
            await submit(http, bob)  # not alice's: never on her stream
            await orchestrator.run(one["id"], progress_steps=0)
            events = await SseReader(response).take(4)
    assert {e.data["job_id"] for e in events} == {one["id"], two["id"]}
    assert [e.event for e in events].count("queued") == 2


async def test_websocket_carries_the_same_events_by_the_naming_table(
    served: Served, orchestrator: Orchestrator
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        alice = await new_key(http, "alice")
        ws_url = served.url.replace("http", "ws") + "/v1/ws"
        async with websockets.connect(ws_url, additional_headers=alice) as ws:
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready" and ready["owner"] == "alice"
            job = await submit(http, alice)
            await orchestrator.run(job["id"], progress_steps=1)
            received: list[dict[str, Any]] = []
            async with asyncio.timeout(10):
                while len(received) < 4:
                    message = json.loads(await ws.recv())
                    if message["type"] != "ping":
                        received.append(message)
            await ws.send(json.dumps({"type": "ping"}))
        assert [m["type"] for m in received] == [
            "job_update",
            "job_update",
            "step_update",
            "job_completed",
        ]
        assert [m["event"] for m in received] == ["queued", "started", "progress", "completed"]
        assert received[-1]["data"]["outputs"][0]["kind"] == "image"
        # first-message auth works too; a bad key is refused with a 44xx close
        async with websockets.connect(ws_url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": "cl_wrong"}))
            error = json.loads(await ws.recv())
            assert error["code"] == "unauthorized"
            try:
                await ws.recv()
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 4401
        # an admin may follow one job of anyone's
        async with websockets.connect(
            ws_url + f"?job_id={job['id']}", additional_headers=ADMIN
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            replay = [json.loads(await ws.recv()) for _ in range(4)]
            assert replay[-1]["type"] == "job_completed"


async def test_a_stream_whose_client_goes_away_is_let_go_at_once(
    settings: Settings, bus: Bus
) -> None:
    """An idle stream waits for its next event or heartbeat (here 30 s off); a client that
    closes it is noticed then and there, and its listener is gone. The stream's answer still
    carries the headers the middleware adds (the request id, the rate limit)."""
    running, stop = await serve(create_app(settings.model_copy(update={"sse_heartbeat_s": 30})))
    fanout = running.app.state.gateway.fanout
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as http:
            alice = await new_key(http, "alice")
            before = fanout.listeners
            for _ in range(3):
                async with http.stream("GET", "/v1/events", headers=alice) as response:
                    assert response.status_code == 200
                    assert response.headers["x-request-id"]
                    assert "ratelimit-remaining" in response.headers
                    lines = response.aiter_lines()
                    assert (await anext(lines)).startswith("retry: ")
                    await until(lambda: fanout.listeners == before + 1)
                await until(lambda: fanout.listeners == before, timeout_s=3)
    finally:
        await stop()
