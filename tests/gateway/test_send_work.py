"""A plain job's work goes out with its submission when a live worker serves its model.

The gateway sends ``work.<model>`` (message id ``<job_id>:run``), then ``submitted`` (which then
says ``work_sent``), only for a job the orchestrator would send at once itself: not a pipeline
or a retry, nothing for the content policy or the enhancer, a live worker that is not draining,
the model not paused. Every other job waits for the orchestrator, as before.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from comfyline.catalogue import Catalogue
from comfyline.contracts import JobEvent, RunJob
from comfyline.gateway import Settings, create_app
from comfyline.runtime import Bus, NatsSettings, S3Settings
from comfyline.testkit.orchestrator import until

from .conftest import ADMIN, SDXL_TEST, make_settings, new_key, publish_models
from .test_admin import beat
from .test_catalogue import heartbeat


@pytest.fixture
def settings(namespace: str, nats_settings: NatsSettings, s3_settings: S3Settings) -> Settings:
    """A gateway as it comes (``GATEWAY_SEND_WORK`` on by default)."""
    return make_settings(namespace, nats_settings, s3_settings)


SMOKE_INPUT = {"width": 64, "height": 32, "color": 7}
SMOKE: dict[str, Any] = {"model": "cpu-smoke", "input": SMOKE_INPUT}


async def until_live(gateway: FastAPI, model: str, live: bool = True) -> None:
    """Wait until this gateway's fleet watch has seen (or stopped seeing) a live worker."""
    await until(lambda: gateway.state.gateway.fleetwatch.live(model) is live)


async def submission(bus: Bus, owner: str, job_id: str) -> JobEvent:
    msg = await bus.js.get_last_msg(
        bus.names.stream("JOBS"), bus.names.job_event(owner, job_id, "submitted")
    )
    return JobEvent.from_bytes(msg.data or b"")


async def work_of(bus: Bus, model: str, lane: str = "interactive") -> list[tuple[RunJob, str]]:
    """Every work message waiting for ``model``, with its message id."""
    found = []
    info = await bus.js.stream_info(bus.names.stream("WORK"))
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await bus.js.get_msg(bus.names.stream("WORK"), seq)
        except Exception:  # deleted or taken
            continue
        if msg.subject == bus.names.work(model, lane):
            assert msg.headers is not None
            found.append((RunJob.from_bytes(msg.data or b""), msg.headers["Nats-Msg-Id"]))
    return found


async def post(client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> str:
    response = await client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_a_plain_job_for_a_live_worker_goes_out_with_its_submission(
    client: httpx.AsyncClient, gateway: FastAPI, alice: dict[str, str], bus: Bus
) -> None:
    await beat(bus, "gpu-1")
    await until_live(gateway, "cpu-smoke")
    job_id = await post(client, alice, {**SMOKE, "deadline_s": 30, "priority": "batch"})
    event = await submission(bus, "alice", job_id)
    assert event.submission is not None and event.submission.work_sent is True
    [(work, msg_id)] = await work_of(bus, "cpu-smoke", "batch")
    assert msg_id == f"{job_id}:run"
    template = Catalogue.builtin().get("cpu-smoke")
    assert work.job_id == job_id and work.owner == "alice" and work.model == "cpu-smoke"
    assert work.template_version == template.version
    assert work.input == event.submission.input == {**SMOKE_INPUT, "batch_size": 1}
    assert work.output_prefix == f"outputs/alice/{job_id}/"
    # Each delivery may wait its queue limit and run its (client-shortened) run limit.
    span = (template.retry_limit + 1) * (template.deadlines.queue_s + 30)
    assert work.deadline_at == event.occurred_at + timedelta(seconds=span)


async def test_no_live_worker_a_draining_one_or_a_pause_leave_the_job_to_the_orchestrator(
    client: httpx.AsyncClient, gateway: FastAPI, alice: dict[str, str], bus: Bus
) -> None:
    first = await post(client, alice, SMOKE)  # no worker has ever heartbeated
    await beat(bus, "gpu-d", draining=True)
    await asyncio.sleep(0.2)  # the watch has seen it (it would count as live if not draining)
    assert gateway.state.gateway.fleetwatch.live("cpu-smoke") is False
    second = await post(client, alice, SMOKE)
    await beat(bus, "gpu-d")
    await until_live(gateway, "cpu-smoke")
    paused = await client.post("/v1/models/cpu-smoke/pause", json={"reason": "x"}, headers=ADMIN)
    assert paused.status_code == 200, paused.text
    await until(lambda: gateway.state.gateway.orders.paused("cpu-smoke") is not None)
    third = await post(client, alice, SMOKE)
    for job_id in (first, second, third):
        event = await submission(bus, "alice", job_id)
        assert event.submission is not None and event.submission.work_sent is False
    assert await work_of(bus, "cpu-smoke") == []
    await client.post("/v1/models/cpu-smoke/resume", headers=ADMIN)
    await until(lambda: gateway.state.gateway.orders.paused("cpu-smoke") is None)
    fourth = await post(client, alice, SMOKE)
    assert [w.job_id for w, _ in await work_of(bus, "cpu-smoke")] == [fourth]


async def test_a_job_with_text_to_screen_waits_for_the_orchestrator(
    client: httpx.AsyncClient, gateway: FastAPI, alice: dict[str, str], bus: Bus
) -> None:
    await heartbeat(bus, "gpu-x", ["test-sdxl", "cpu-smoke"])
    await until_live(gateway, "test-sdxl")
    body = {"model": SDXL_TEST.name, "input": {"prompt": "a lighthouse at dusk"}}
    job_id = await post(client, alice, body)
    event = await submission(bus, "alice", job_id)
    assert event.submission is not None and event.submission.work_sent is False
    assert await work_of(bus, SDXL_TEST.name) == []


async def test_a_gateway_told_not_to_leaves_every_job_to_the_orchestrator(
    namespace: str, nats_settings: NatsSettings, s3_settings: S3Settings, bus: Bus
) -> None:
    await publish_models(bus, SDXL_TEST)
    await beat(bus, "gpu-1")
    app = create_app(make_settings(namespace, nats_settings, s3_settings, send_work=False))
    async with app.router.lifespan_context(app):
        await until_live(app, "cpu-smoke")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            job_id = await post(client, await new_key(client, "carol"), SMOKE)
    event = await submission(bus, "carol", job_id)
    assert event.submission is not None and event.submission.work_sent is False
    assert await work_of(bus, "cpu-smoke") == []


async def test_work_whose_submission_cannot_be_stored_is_taken_back(
    namespace: str, nats_settings: NatsSettings, s3_settings: S3Settings, bus: Bus
) -> None:
    """The work goes first; when its ``submitted`` is then refused (here: no stream takes it),
    the client gets an error and the work is deleted before any worker runs a job with no
    record."""
    await beat(bus, "gpu-1")
    quick = nats_settings.model_copy(update={"publish_retry_s": 0.2})
    app = create_app(make_settings(namespace, quick, s3_settings))
    async with app.router.lifespan_context(app):
        await until_live(app, "cpu-smoke")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            headers = await new_key(client, "dave")
            await bus.js.delete_stream(bus.names.stream("JOBS"))
            response = await client.post("/v1/jobs", json=SMOKE, headers=headers)
    assert response.status_code == 503, response.text
    info = await bus.js.stream_info(bus.names.stream("WORK"))
    assert info.state.last_seq == 1 and info.state.messages == 0  # sent, then taken back


async def test_work_leaves_beside_the_active_slot_and_is_taken_back_when_the_slot_is_not_there(
    client: httpx.AsyncClient, gateway: FastAPI, settings: Settings, bus: Bus
) -> None:
    """A gateway whose last write of the owner's active count has room sends the work beside
    the count's compare-and-set. When another replica took the last slot meanwhile (the write
    loses, the count read now is at the cap), the job is refused and its work deleted."""
    await beat(bus, "gpu-1")
    second = create_app(settings)  # another replica
    async with second.router.lifespan_context(second):
        await until_live(gateway, "cpu-smoke")
        await until_live(second, "cpu-smoke")
        transport = httpx.ASGITransport(app=second)
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as other:
            user = await new_key(client, "dora", limits={"active_jobs": 3, "submit_per_min": 100})
            first = await post(client, user, SMOKE)  # read, then written: this replica's count
            beside = await post(client, user, SMOKE)  # its own last write: the work beside
            taken = await post(other, user, SMOKE)  # the other replica takes the last slot
            refused = await client.post("/v1/jobs", json=SMOKE, headers=user)
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "too_many_active_jobs"
    assert refused.json()["details"] == {"active": 3, "limit": 3}
    sent = await work_of(bus, "cpu-smoke")
    assert sorted(w.job_id for w, _ in sent) == sorted([first, beside, taken])
    for job_id in (first, beside, taken):
        event = await submission(bus, "dora", job_id)
        assert event.submission is not None and event.submission.work_sent is True
