"""Batches: validated whole, a job each, progress and results, quotas, restarts; lanes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from comfyline.contracts import (
    ActiveJobs,
    BatchRecord,
    JobEvent,
    RunJob,
    active_jobs_key,
    new_job_id,
)
from comfyline.gateway import Settings, create_app
from comfyline.runtime import Bus

from .conftest import ADMIN, Orchestrator, active_count, new_key


def smoke(color: int) -> dict[str, Any]:
    return {"model": "cpu-smoke", "input": {"width": 64, "height": 64, "color": color}}


async def submitted(bus: Bus, owner: str, job_id: str) -> JobEvent:
    msg = await bus.js.get_last_msg(
        bus.names.stream("JOBS"), bus.names.job_event(owner, job_id, "submitted")
    )
    return JobEvent.from_bytes(msg.data or b"")


async def owner_job_count(bus: Bus, owner: str) -> int:
    info = await bus.js.stream_info(
        bus.names.stream("JOBS"), subjects_filter=bus.names.job_kind_filter("submitted", owner)
    )
    return len(info.state.subjects or {})


async def test_a_batch_makes_one_job_per_request_and_reports_progress_and_results(
    client: httpx.AsyncClient, bus: Bus, orchestrator: Orchestrator
) -> None:
    user = await new_key(client, "bea", limits={"submit_per_min": 100, "active_jobs": 10})
    body = {"jobs": [smoke(1), smoke(2), smoke(3)], "metadata": {"campaign": "spring"}}
    created = await client.post("/v1/batches", json=body, headers=user)
    assert created.status_code == 202, created.text
    batch = created.json()
    assert batch["id"].startswith("bat_") and batch["total"] == 3
    assert batch["status"] == "running" and batch["priority"] == "batch"
    ids = [job["id"] for job in batch["jobs"]]
    assert len(set(ids)) == 3
    assert [job["input"]["color"] for job in batch["jobs"]] == [1, 2, 3]
    for job_id in ids:
        event = await submitted(bus, "bea", job_id)
        assert event.submission is not None
        assert event.submission.batch_id == batch["id"]
        assert event.submission.priority == "batch"

    await orchestrator.run(ids[0])
    read = await client.get(f"/v1/batches/{batch['id']}", headers=user)
    assert read.status_code == 200, read.text
    progress = read.json()
    assert progress["done"] == 1 and progress["progress"] == 33.3
    assert progress["counts"]["succeeded"] == 1 and progress["counts"]["queued"] == 2
    assert progress["jobs"][0]["outputs"][0]["url"].startswith("http")
    for job_id in ids[1:]:
        await orchestrator.run(job_id)
    final = (await client.get(f"/v1/batches/{batch['id']}", headers=user)).json()
    assert final["status"] == "completed" and final["progress"] == 100.0
    assert final["metadata"] == {"campaign": "spring"}

    other = await new_key(client, "cal")
    assert (await client.get(f"/v1/batches/{batch['id']}", headers=other)).status_code == 404
    assert (await client.get(f"/v1/batches/{batch['id']}", headers=ADMIN)).status_code == 200
    assert (await client.get("/v1/batches/bat_nope", headers=user)).status_code == 404


async def test_a_batch_is_validated_whole_and_nothing_is_submitted_if_one_is_bad(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    user = await new_key(client, "dov", limits={"submit_per_min": 100})
    bad = {
        "jobs": [
            smoke(1),
            {"model": "cpu-smoke", "input": {"width": "wide"}},
            smoke(3),
            {"model": "no-such-model"},
        ]
    }
    refused = await client.post("/v1/batches", json=bad, headers=user)
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["code"] == "validation_error"
    assert [(e["index"], e["code"]) for e in body["details"]["errors"]] == [
        (1, "validation_error"),
        (3, "unknown_model"),
    ]
    assert await owner_job_count(bus, "dov") == 0
    empty = await client.post("/v1/batches", json={"jobs": []}, headers=user)
    assert empty.status_code == 422


async def test_batch_jobs_count_against_the_keys_active_jobs_quota(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    user = await new_key(client, "eve", limits={"submit_per_min": 100, "active_jobs": 3})
    over = await client.post(
        "/v1/batches", json={"jobs": [smoke(i) for i in range(4)]}, headers=user
    )
    assert over.status_code == 429 and over.json()["code"] == "too_many_active_jobs"
    assert over.json()["details"]["asked"] == 4
    assert await owner_job_count(bus, "eve") == 0
    fits = await client.post(
        "/v1/batches", json={"jobs": [smoke(i) for i in range(3)]}, headers=user
    )
    assert fits.status_code == 202
    single = await client.post("/v1/jobs", json=smoke(9), headers=user)
    assert single.status_code == 429 and single.json()["code"] == "too_many_active_jobs"


async def test_a_batch_survives_a_gateway_restart(
    gateway: FastAPI, settings: Settings, client: httpx.AsyncClient
) -> None:
    user = await new_key(client, "fay", limits={"submit_per_min": 100})
    batch = (await client.post("/v1/batches", json={"jobs": [smoke(1)]}, headers=user)).json()
    again = create_app(settings)  # a new process: nothing kept in memory
    async with again.router.lifespan_context(again):
        transport = httpx.ASGITransport(app=again)
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as other:
            read = await other.get(f"/v1/batches/{batch['id']}", headers=user)
    assert read.status_code == 200
    assert [j["id"] for j in read.json()["jobs"]] == [j["id"] for j in batch["jobs"]]


async def test_a_key_limited_to_a_lane_submits_only_there(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    made = await client.post(
        "/v1/keys",
        json={"owner": "gus", "name": "bulk", "lane": "batch", "limits": {"submit_per_min": 50}},
        headers=ADMIN,
    )
    assert made.status_code == 201, made.text
    assert made.json()["key"]["lane"] == "batch"
    bulk = {"Authorization": f"Bearer {made.json()['secret']}"}
    job = await client.post("/v1/jobs", json=smoke(1), headers=bulk)
    assert job.status_code == 202 and job.json()["priority"] == "batch"
    event = await submitted(bus, "gus", job.json()["id"])
    assert event.submission is not None and event.submission.priority == "batch"
    refused = await client.post(
        "/v1/jobs", json={**smoke(2), "priority": "interactive"}, headers=bulk
    )
    assert refused.status_code == 403 and refused.json()["code"] == "lane_not_allowed"
    in_batch = await client.post(
        "/v1/batches", json={"jobs": [smoke(3)], "priority": "interactive"}, headers=bulk
    )
    assert in_batch.status_code == 403 and in_batch.json()["code"] == "lane_not_allowed"
    anyone = await new_key(client, "hal", limits={"submit_per_min": 50})
    default = await client.post("/v1/jobs", json=smoke(4), headers=anyone)
    assert default.json()["priority"] == "interactive"
    own_key = await client.post("/v1/keys", json={"lane": "interactive"}, headers=bulk)
    assert own_key.status_code == 403  # a key cannot leave its lane


async def test_each_lane_has_its_own_queue_cap(client: httpx.AsyncClient, bus: Bus) -> None:
    """A full batch lane refuses batch work and leaves room for interactive work."""
    user = await new_key(client, "ivy", limits={"submit_per_min": 100})
    body = {"model": "test-sdxl", "input": {"prompt": "a fox"}}
    for n in range(2):  # the test model's max_queue is 2: fill its batch lane
        work = RunJob(
            job_id=f"job_{n:026d}",
            owner="x",
            model="test-sdxl",
            template_version=3,
            input={},
            output_prefix="o/",
        )
        await bus.publish(bus.names.work("test-sdxl", "batch"), work, msg_id=f"b{n}")
    full = await client.post("/v1/jobs", json={**body, "priority": "batch"}, headers=user)
    assert full.status_code == 503 and full.json()["code"] == "queue_full"
    in_batch = await client.post("/v1/batches", json={"jobs": [body]}, headers=user)
    assert in_batch.status_code == 503
    interactive = await client.post("/v1/jobs", json=body, headers=user)
    assert interactive.status_code == 202, interactive.text
    status = (await client.get("/v1/status", headers=ADMIN)).json()
    assert status["models"]["test-sdxl"]["queue_depth"] == 2  # both lanes are the backlog


async def test_jobs_a_dead_gateway_never_published_are_counted_lost_once(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    """A batch recorded with a job that was never published (its gateway died): after a while
    the job counts as lost, the batch can complete, and the job's active slot comes back."""
    user = await new_key(client, "jon", limits={"submit_per_min": 100, "active_jobs": 2})
    made = (await client.post("/v1/batches", json={"jobs": [smoke(1)]}, headers=user)).json()
    kv = await bus.kv(bus.names.bucket("batches"))
    record = BatchRecord.from_bytes((await kv.get(made["id"])).value or b"")
    ghost = new_job_id()  # recorded and its slot taken, as create does, but never published
    usage = await bus.kv(bus.names.bucket("usage"))
    active = ActiveJobs.from_bytes((await usage.get(active_jobs_key("jon"))).value or b"")
    await usage.put(active_jobs_key("jon"), active.model_copy(update={"count": 2}).to_bytes())
    before = await active_count(bus, "jon")
    old = record.model_copy(
        update={
            "job_ids": [*record.job_ids, ghost],
            "created_at": record.created_at - timedelta(minutes=5),
        }
    )
    await kv.put(old.id, old.to_bytes())

    read = (await client.get(f"/v1/batches/{made['id']}", headers=user)).json()
    assert read["total"] == 2 and read["counts"]["lost"] == 1 and read["done"] == 1
    again = (await client.get(f"/v1/batches/{made['id']}", headers=user)).json()
    assert again["counts"]["lost"] == 1
    assert await active_count(bus, "jon") == before - 1  # the ghost's slot came back, once
