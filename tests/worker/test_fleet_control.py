"""Operators' control of a running fleet, through the gateway, with a real orchestrator.

Drain a busy worker (its job finishes, nothing new starts there, another worker takes the
queue, no job lost); pause and resume a model (its jobs stay queued, saying why); retry a
dead-lettered job to success.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from comfyline.catalogue import Catalogue
from comfyline.contracts import JobRecord, JobState, RunJob
from comfyline.gateway import create_app
from comfyline.gateway.settings import LimitSettings
from comfyline.orchestrator import Orchestrator
from comfyline.runtime import Bus, NatsSettings, S3Settings
from comfyline.testkit.orchestrator import (
    Outcome,
    ScriptedWorker,
    output_of,
    quick_settings,
    until,
    wait_record,
)

from ..gateway.conftest import ADMIN, make_settings, new_key
from .helpers import SimFactory, Workers

SMOKE = {"model": "cpu-smoke", "input": {"width": 32, "height": 32}}


@pytest.fixture
async def orchestrator(bus: Bus, nats_settings: NatsSettings) -> AsyncIterator[Orchestrator]:
    settings = quick_settings(nats_settings, bus.names.namespace)
    async with Orchestrator(bus, Catalogue.builtin(), settings) as running:
        yield running


@pytest.fixture
async def api(
    bus: Bus, nats_settings: NatsSettings, s3_settings: S3Settings, orchestrator: Orchestrator
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in-process, in front of the orchestrator."""
    # The tests poll the admin routes until the fleet changes: more than a minute's default
    # status budget of the admin key.
    limits = LimitSettings(status_per_min=100_000)
    app = create_app(make_settings(bus.names.namespace, nats_settings, s3_settings, limits=limits))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as http:
            yield http


async def submit(api: httpx.AsyncClient, user: dict[str, str], color: int = 0) -> str:
    body = {**SMOKE, "input": {**SMOKE["input"], "color": color}}  # type: ignore[dict-item]
    response = await api.post("/v1/jobs", json=body, headers=user)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def worker_view(api: httpx.AsyncClient, worker_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/workers/{worker_id}", headers=ADMIN)
    return dict(response.json()) if response.status_code == 200 else {}


def ran_on(record: JobRecord) -> list[str | None]:
    return [a.worker_id for a in record.attempt_log]


async def test_draining_a_busy_worker_finishes_its_job_and_moves_the_queue(
    bus: Bus, api: httpx.AsyncClient, sim_factory: SimFactory, workers: Workers
) -> None:
    user = await new_key(api, "dana", limits={"submit_per_min": 100, "active_jobs": 20})
    slow = ["--node-delay", "EmptyImage=1.0"]
    workers([sim_factory(*slow).url], worker_id="worker-a")
    await until(lambda: _live(api, "worker-a"), timeout_s=20)
    first = await submit(api, user)
    await wait_record(bus, first, lambda r: r.status is JobState.RUNNING, timeout_s=20)

    drained = await api.post(
        "/v1/workers/worker-a/drain", json={"reason": "maintenance"}, headers=ADMIN
    )
    assert drained.status_code == 200, drained.text
    await until(lambda: _says(api, "worker-a", "draining", True), timeout_s=10)
    assert (await worker_view(api, "worker-a"))["state"] == "draining"  # its job still runs
    queued = [await submit(api, user, color=i) for i in range(1, 4)]

    done = await wait_record(bus, first, timeout_s=20)
    assert done.status is JobState.SUCCEEDED and ran_on(done) == ["worker-a"]
    await until(lambda: _says(api, "worker-a", "state", "drained"), timeout_s=10)
    for job_id in queued:  # nothing new starts on the drained worker
        record = await wait_record(bus, job_id, lambda r: True)
        assert record.status in {JobState.QUEUED, JobState.DISPATCHED}, record.status

    workers([sim_factory().url], worker_id="worker-b")
    records = [await wait_record(bus, job_id, timeout_s=30) for job_id in queued]
    assert [r.status for r in records] == [JobState.SUCCEEDED] * 3  # none lost
    assert all(ran_on(r) == ["worker-b"] for r in records)
    view = await worker_view(api, "worker-a")
    assert view["jobs_done"] == 1 and view["current_jobs"] == []

    resumed = await api.post("/v1/workers/worker-a/resume", headers=ADMIN)
    assert resumed.status_code == 200
    await until(lambda: _says(api, "worker-a", "draining", False), timeout_s=10)


async def _live(api: httpx.AsyncClient, worker_id: str) -> bool:
    view = await worker_view(api, worker_id)
    return bool(view) and view["state"] == "idle"


async def _says(api: httpx.AsyncClient, worker_id: str, field: str, value: object) -> bool:
    return (await worker_view(api, worker_id)).get(field) == value


async def test_a_paused_models_jobs_stay_queued_with_the_reason_until_resumed(
    bus: Bus, api: httpx.AsyncClient, sim_factory: SimFactory, workers: Workers
) -> None:
    user = await new_key(api, "erin", limits={"submit_per_min": 100})
    workers([sim_factory().url], worker_id="worker-p")
    await until(lambda: _live(api, "worker-p"), timeout_s=20)
    paused = await api.post(
        "/v1/models/cpu-smoke/pause", json={"reason": "new checkpoint"}, headers=ADMIN
    )
    assert paused.status_code == 200, paused.text
    job_id = await submit(api, user)
    waiting = await wait_record(bus, job_id, lambda r: r.waiting_reason is not None, timeout_s=10)
    assert waiting.status is JobState.QUEUED
    assert waiting.waiting_reason == "model_paused: new checkpoint"
    shown = (await api.get(f"/v1/jobs/{job_id}", headers=user)).json()
    assert shown["status"] == "queued" and shown["waiting_reason"].startswith("model_paused")

    resumed = await api.post("/v1/models/cpu-smoke/resume", headers=ADMIN)
    assert resumed.status_code == 200
    done = await wait_record(bus, job_id, timeout_s=20)
    assert done.status is JobState.SUCCEEDED and done.waiting_reason is None


async def test_a_dead_lettered_job_is_retried_to_success(
    bus: Bus, api: httpx.AsyncClient, orchestrator: Orchestrator
) -> None:
    """Every delivery of the first job fails; its retry, a new job, succeeds."""
    user = await new_key(api, "finn", limits={"submit_per_min": 100})
    doomed: set[str] = set()

    async def script(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        await worker.report(job, "started", attempt)
        if not doomed:  # the first job the worker sees (it may come before the POST returns)
            doomed.add(job.job_id)
        if job.job_id in doomed:
            return "nak"
        await worker.report(job, "completed", attempt, outputs=[output_of(job)])
        return "ack"

    worker = ScriptedWorker(bus, "cpu-smoke", script, max_deliver=2, ack_wait_s=1)
    await worker.start()
    try:
        response = await api.post("/v1/jobs", json=SMOKE, headers=user)
        first = response.json()["id"]
        failed = await wait_record(bus, first, timeout_s=20)
        assert doomed == {first}
        assert failed.status is JobState.FAILED and failed.error is not None
        assert failed.error.code == "max_attempts_exceeded"
        await until(lambda: _dead_lettered(api, first), timeout_s=10)

        retried = await api.post(f"/v1/dead-letters/{first}/retry", headers=ADMIN)
        assert retried.status_code == 202, retried.text
        second = retried.json()["id"]
        done = await wait_record(bus, second, timeout_s=20)
        assert done.status is JobState.SUCCEEDED and done.retry_of == first
        old = await wait_record(bus, first, lambda r: r.replaced_by is not None)
        assert old.replaced_by == second and old.status is JobState.FAILED  # never moves back
        listed = (await api.get("/v1/dead-letters", headers=ADMIN)).json()["data"]
        assert [(d["id"], d["replaced_by"]) for d in listed] == [(first, second)]
    finally:
        await worker.stop()


async def _dead_lettered(api: httpx.AsyncClient, job_id: str) -> bool:
    listed = (await api.get("/v1/dead-letters", headers=ADMIN)).json()["data"]
    return any(d["id"] == job_id for d in listed)


async def test_cancelling_a_batch_cancels_every_job_that_has_not_ended(
    bus: Bus, api: httpx.AsyncClient
) -> None:
    """No worker serves the model, so the jobs wait; the batch's cancel ends them all."""
    user = await new_key(api, "gil", limits={"submit_per_min": 100})
    jobs = [{**SMOKE, "input": {"color": i}} for i in range(5)]
    created = await api.post("/v1/batches", json={"jobs": jobs}, headers=user)
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    ids = [job["id"] for job in created.json()["jobs"]]
    for job_id in ids:  # the orchestrator has taken each in
        await wait_record(bus, job_id, lambda r: True)
    cancelled = await api.delete(f"/v1/batches/{batch_id}", headers=user)
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    records = [await wait_record(bus, job_id) for job_id in ids]
    assert {r.status for r in records} == {JobState.CANCELLED}
    read = (await api.get(f"/v1/batches/{batch_id}", headers=user)).json()
    assert read["counts"]["cancelled"] == 5 and read["done"] == 5
