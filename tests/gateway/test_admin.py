"""Admins' routes: workers, drain and resume, model pauses, dead letters, worker events; 403s."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
from nats.js.errors import NoKeysError

from comfyline.contracts import (
    DeadLetter,
    ErrorCode,
    JobError,
    JobEvent,
    JobState,
    ModelPause,
    ServerStatus,
    WorkerDrain,
    WorkerHeartbeat,
    utcnow,
)
from comfyline.runtime import Bus

from .conftest import ADMIN, Orchestrator, Served, new_key
from .test_events import SseReader


async def beat(
    bus: Bus, worker_id: str, *, healthy: bool = True, busy: bool = False, draining: bool = False
) -> None:
    """Write a worker's heartbeat as the worker does."""
    heartbeat = WorkerHeartbeat(
        worker_id=worker_id,
        models=["cpu-smoke"],
        servers=[
            ServerStatus(
                url="http://10.0.0.5:8188",
                healthy=healthy,
                busy=busy,
                job_id="job_01kax7r2m0a1b2c3d4e5f6g7h8" if busy else None,
                models=["cpu-smoke"],
                loaded=["model.safetensors"],
                last_model="cpu-smoke",
            )
        ],
        started_at=utcnow(),
        jobs_done=7,
        jobs_failed=2,
        draining=draining,
    )
    kv = await bus.kv(bus.names.bucket("workers"))
    await kv.put(worker_id, heartbeat.to_bytes())


def admin_routes(client_app: Any) -> list[tuple[str, str]]:
    """Every route the OpenAPI document tags ``admin``, with a concrete path."""
    schema = client_app.openapi()
    routes = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if "admin" in operation.get("tags", []):
                routes.append((method.upper(), re.sub(r"\{[^}]+\}", "cpu-smoke", path)))
    return routes


async def test_every_admin_route_is_listed_and_refuses_non_admins(
    client: httpx.AsyncClient, gateway: Any, alice: dict[str, str]
) -> None:
    routes = admin_routes(gateway)
    paths = {path for _, path in routes}
    assert {
        "/v1/workers",
        "/v1/workers/cpu-smoke/drain",
        "/v1/workers/cpu-smoke/resume",
        "/v1/models/cpu-smoke/pause",
        "/v1/models/cpu-smoke/resume",
        "/v1/dead-letters",
        "/v1/dead-letters/cpu-smoke/retry",
    } <= paths
    for method, path in routes:
        refused = await client.request(method, path, headers=alice)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["code"] == "forbidden"
        anonymous = await client.request(method, path)
        assert anonymous.status_code == 401, (method, path)


async def test_workers_list_shows_what_each_worker_does(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    await beat(bus, "gpu-a", busy=True)
    await beat(bus, "gpu-b")
    listed = await client.get("/v1/workers", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    workers = {w["id"]: w for w in listed.json()["data"]}
    assert set(workers) == {"gpu-a", "gpu-b"}
    busy = workers["gpu-a"]
    assert busy["state"] == "busy"
    assert busy["current_jobs"] == ["job_01kax7r2m0a1b2c3d4e5f6g7h8"]
    assert busy["loaded"] == ["model.safetensors"]
    assert busy["servers"][0]["last_model"] == "cpu-smoke"
    assert (busy["jobs_done"], busy["jobs_failed"]) == (7, 2)
    assert busy["last_heartbeat"] and busy["models"] == ["cpu-smoke"]
    assert workers["gpu-b"]["state"] == "idle" and workers["gpu-b"]["current_jobs"] == []
    one = await client.get("/v1/workers/gpu-b", headers=ADMIN)
    assert one.status_code == 200 and one.json()["id"] == "gpu-b"
    assert (await client.get("/v1/workers/nope", headers=ADMIN)).status_code == 404


async def test_drain_and_resume_write_the_order_workers_watch(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    await beat(bus, "gpu-a")
    drained = await client.post(
        "/v1/workers/gpu-a/drain", json={"reason": "driver update"}, headers=ADMIN
    )
    assert drained.status_code == 200, drained.text
    assert drained.json()["drain_requested"] is True
    assert drained.json()["drain_reason"] == "driver update"
    kv = await bus.kv(bus.names.bucket("fleet"))
    order = WorkerDrain.from_bytes((await kv.get("drain.gpu-a")).value or b"")
    assert order.reason == "driver update" and order.requested_by
    unknown = await client.post("/v1/workers/ghost/drain", headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    resumed = await client.post("/v1/workers/gpu-a/resume", headers=ADMIN)
    assert resumed.status_code == 200 and resumed.json()["drain_requested"] is False
    assert "drain.gpu-a" not in await keys_of(kv)


async def keys_of(kv: Any) -> list[str]:
    """The bucket's keys (none at all is an error in nats.py)."""
    try:
        return list(await kv.keys())
    except NoKeysError:
        return []


async def test_pause_and_resume_a_model(
    client: httpx.AsyncClient, bus: Bus, orchestrator: Orchestrator, alice: dict[str, str]
) -> None:
    job = (await client.post("/v1/jobs", json={"model": "cpu-smoke"}, headers=alice)).json()
    record = await orchestrator.queued(job["id"])
    await orchestrator.write(record.model_copy(update={"status": JobState.DISPATCHED}))
    paused = await client.post(
        "/v1/models/cpu-smoke/pause", json={"reason": "new checkpoint"}, headers=ADMIN
    )
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True and paused.json()["reason"] == "new checkpoint"
    kv = await bus.kv(bus.names.bucket("fleet"))
    pause = ModelPause.from_bytes((await kv.get("pause.cpu-smoke")).value or b"")
    assert pause.reason == "new checkpoint"
    status = (await client.get("/v1/status", headers=ADMIN)).json()
    assert status["models"]["cpu-smoke"]["paused"] is True
    waiting = (await client.get(f"/v1/jobs/{job['id']}", headers=alice)).json()
    assert waiting["waiting_reason"] == "model_paused: new checkpoint"  # dispatched, in WORK
    assert (await client.post("/v1/models/nope/pause", headers=ADMIN)).status_code == 404
    resumed = await client.post("/v1/models/cpu-smoke/resume", headers=ADMIN)
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert "pause.cpu-smoke" not in await keys_of(kv)
    status = (await client.get("/v1/status", headers=ADMIN)).json()
    assert status["models"]["cpu-smoke"]["paused"] is False
    going = (await client.get(f"/v1/jobs/{job['id']}", headers=alice)).json()
    assert going.get("waiting_reason") is None


async def test_a_model_served_only_by_draining_workers_is_not_available(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    await beat(bus, "gpu-d", draining=True, busy=True)
    status = (await client.get("/v1/status", headers=ADMIN)).json()["models"]["cpu-smoke"]
    assert status["available"] is False and status["idle_servers"] == 0
    assert status["running"] == 1  # its last job still runs
    view = (await client.get("/v1/workers/gpu-d", headers=ADMIN)).json()
    assert view["state"] == "draining" and view["draining"] is True
    await beat(bus, "gpu-e")
    status = (await client.get("/v1/status", headers=ADMIN)).json()["models"]["cpu-smoke"]
    assert status["available"] is True and status["workers"] == 1


async def test_a_dead_letter_is_listed_and_retried_once_as_a_new_job(
    client: httpx.AsyncClient, bus: Bus, orchestrator: Orchestrator, alice: dict[str, str]
) -> None:
    job = (await client.post("/v1/jobs", json={"model": "cpu-smoke"}, headers=alice)).json()
    record = await orchestrator.queued(job["id"])
    error = JobError(code=ErrorCode.MAX_ATTEMPTS_EXCEEDED, message="gave up after 3 attempts")
    failed = record.model_copy(
        update={"status": JobState.FAILED, "error": error, "finished_at": utcnow()}
    )
    await orchestrator.write(failed)
    letter = DeadLetter(job_id=job["id"], model="cpu-smoke", deliveries=3, reason="spent")
    await bus.publish(bus.names.dead_letter("cpu-smoke"), letter, msg_id=f"{job['id']}:dl")

    listed = await client.get("/v1/dead-letters", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["data"]
    assert item["id"] == job["id"] and item["deliveries"] == 3 and item["owner"] == "alice"
    assert item["error"]["code"] == "max_attempts_exceeded" and item["replaced_by"] is None
    assert (await client.get("/v1/dead-letters?model=test-sdxl", headers=ADMIN)).json()[
        "data"
    ] == []

    retried = await client.post(f"/v1/dead-letters/{job['id']}/retry", headers=ADMIN)
    assert retried.status_code == 202, retried.text
    new = retried.json()
    assert new["id"] != job["id"] and new["retry_of"] == job["id"]
    assert new["status"] == "queued" and new["input"] == job["input"]
    msg = await bus.js.get_last_msg(
        bus.names.stream("JOBS"), bus.names.job_event("alice", new["id"], "submitted")
    )
    submitted = JobEvent.from_bytes(msg.data or b"")
    assert submitted.submission is not None and submitted.submission.retry_of == job["id"]
    again = await client.post(f"/v1/dead-letters/{job['id']}/retry", headers=ADMIN)
    assert again.status_code == 409 and again.json()["code"] == "already_retried"
    assert again.json()["details"]["replaced_by"] == new["id"]
    # the owner sees the new job as theirs
    mine = await client.get(f"/v1/jobs/{new['id']}", headers=alice)
    assert mine.status_code == 200 and mine.json()["retry_of"] == job["id"]
    missing = await client.post(f"/v1/dead-letters/{new['id']}/retry", headers=ADMIN)
    assert missing.status_code == 404


async def test_admins_see_worker_health_on_the_dashboard_stream(served: Served, bus: Bus) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=20) as http:
        user = await new_key(http, "carol")
        async with (
            http.stream("GET", "/v1/events", headers=ADMIN) as admin_stream,
            http.stream("GET", "/v1/events", headers=user) as user_stream,
        ):
            assert admin_stream.status_code == 200
            reader = SseReader(admin_stream)
            assert (await reader.lines.__anext__()).startswith("retry:")  # now listening
            await beat(bus, "gpu-z")
            await beat(bus, "gpu-z", healthy=False)
            kv = await bus.kv(bus.names.bucket("workers"))
            await kv.delete("gpu-z")
            events = await reader.take(3)
            assert [(e.event, e.data["kind"]) for e in events] == [
                ("worker", "worker_joined"),
                ("worker", "server_down"),
                ("worker", "worker_left"),
            ]
            assert all(e.id is None and e.data["worker_id"] == "gpu-z" for e in events)
            assert events[1].data["server"] == "http://10.0.0.5:8188"
            # a user's dashboard carries only job events: nothing arrives for them
            user_reader = SseReader(user_stream)
            try:
                async with asyncio.timeout(1.0):
                    seen = await user_reader.take(1)
            except TimeoutError:
                seen = []
            assert seen == []


async def test_the_admin_command_line_drives_the_same_routes(
    served: Served, bus: Bus, capsys: Any
) -> None:
    from comfyline.gateway.cli import main as cli_main

    from .conftest import ADMIN_KEY

    await beat(bus, "gpu-cli")
    target = ["--url", served.url, "--key", ADMIN_KEY]

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(cli_main, ["admin", *target, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await run("workers")
    assert code == 0 and [w["id"] for w in json.loads(out)["data"]] == ["gpu-cli"]
    code, out, _ = await run("workers", "drain", "gpu-cli", "--reason", "cli test")
    assert code == 0 and json.loads(out)["drain_reason"] == "cli test"
    kv = await bus.kv(bus.names.bucket("fleet"))
    assert "drain.gpu-cli" in await keys_of(kv)
    code, out, _ = await run("models", "pause", "cpu-smoke")
    assert code == 0 and json.loads(out)["paused"] is True
    code, out, _ = await run("models", "resume", "cpu-smoke")
    assert code == 0 and "pause.cpu-smoke" not in await keys_of(kv)
    code, out, _ = await run("dead-letters")
    assert code == 0 and json.loads(out)["data"] == []
    code, _, err = await run("workers", "show", "ghost")  # the API's 404: its body, exit 1
    assert code == 1 and '"not_found"' in err
