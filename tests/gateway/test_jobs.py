"""Jobs through the gateway: submit, validate, idempotency, wait, read, list, cancel, outputs."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import timedelta
from typing import Any

import fastapi.dependencies.utils
import httpx
import pytest
from fastapi import FastAPI

from comfyline.contracts import (
    CancelReply,
    CancelRequest,
    ErrorCode,
    EventKind,
    IdempotencyRecord,
    JobError,
    JobEvent,
    JobRecord,
    JobState,
    new_job_id,
    utcnow,
)
from comfyline.gateway import fanout as fanout_module
from comfyline.gateway.auth import Principal
from comfyline.gateway.fanout import Fanout
from comfyline.gateway.schemas import JobCreate
from comfyline.gateway.submit import Submitter, body_digest
from comfyline.runtime import Bus, serve
from comfyline.runtime.consume import Delivery
from comfyline.testkit.orchestrator import submitted_event

from .conftest import ADMIN, Orchestrator, active_count, png

SMOKE = {"model": "cpu-smoke", "input": {"width": 64, "height": 32}}


async def submit(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
    **kw: Any,
) -> httpx.Response:
    return await client.post("/v1/jobs", json=body or SMOKE, headers=headers, **kw)


async def test_submit_answers_202_with_links_and_publishes_the_submission(
    client: httpx.AsyncClient, alice: dict[str, str], bus: Bus
) -> None:
    response = await submit(client, alice, {**SMOKE, "metadata": {"order": "7"}})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["model"] == "cpu-smoke"
    assert job["input"] == {"width": 64, "height": 32, "color": 0, "batch_size": 1}
    assert job["links"]["self"].endswith(f"/v1/jobs/{job['id']}")
    assert "/events?token=" in job["links"]["events"]
    assert response.headers["location"] == job["links"]["self"]
    assert response.headers["ratelimit-remaining"] == "499"
    msg = await bus.js.get_last_msg(
        bus.names.stream("JOBS"), bus.names.job_event("alice", job["id"], "submitted")
    )
    event = JobEvent.from_bytes(msg.data or b"")
    assert event.kind is EventKind.SUBMITTED and event.status is JobState.QUEUED
    assert event.submission is not None and event.submission.metadata == {"order": "7"}
    assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == f"{job['id']}:submitted"


async def test_input_is_validated_against_the_models_parameters(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    cases = [
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": "fox", "width": 1000}, "width"),  # not a multiple of 64
        ({"prompt": "fox", "width": 4096}, "width"),
        ({"prompt": "fox", "height": 32}, "height"),
        ({"prompt": "fox", "steps": 0}, "steps"),
        ({"prompt": "fox", "steps": 101}, "steps"),
        ({"prompt": "fox", "guidance": 31}, "guidance"),
        ({"prompt": "fox", "sampler": "nope"}, "sampler"),
        ({"prompt": "fox", "colour": 1}, ""),
        ({}, "prompt"),
    ]
    for data, field in cases:
        response = await submit(client, alice, {"model": "test-sdxl", "input": data})
        assert response.status_code == 422, (data, response.text)
        body = response.json()
        assert body["code"] == "validation_error"
        assert set(body) == {"error", "code", "details", "request_id"}
        if field:
            assert field in {e["field"] for e in body["details"]["errors"]}, body
    ok = await submit(
        client, alice, {"model": "test-sdxl", "input": {"prompt": "a fox", "width": 768}}
    )
    assert ok.status_code == 202, ok.text
    assert ok.json()["input"]["height"] == 1024 and ok.json()["input"]["seed"] >= 0
    assert ok.json()["template_version"] == 3


async def test_unknown_model_and_malformed_bodies(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    unknown = await submit(client, alice, {"model": "nope", "input": {}})
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_model"
    bad_json = await client.post(
        "/v1/jobs", content=b"{nope", headers={**alice, "Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["code"] == "invalid_json"
    extra = await submit(client, alice, {**SMOKE, "surprise": 1})
    assert extra.status_code == 422 and extra.json()["details"]["errors"][0]["field"] == "surprise"


async def test_the_submissions_own_handler_answers_as_fastapis(
    client: httpx.AsyncClient, alice: dict[str, str], monkeypatch: Any
) -> None:
    """``POST /v1/jobs`` with a JSON body FastAPI would take is answered by the route's own
    handler (no dependency solving); a ``+json`` body type, which FastAPI takes too, goes
    through FastAPI's: both answer the same, and every refusal keeps FastAPI's order."""
    solved = 0
    original = fastapi.dependencies.utils.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal solved
        solved += 1
        return await original(*args, **kwargs)

    monkeypatch.setattr("fastapi.routing.solve_dependencies", counting)
    own = {"Content-Type": "application/json"}
    general = {"Content-Type": "application/vnd.comfyline+json"}

    async def post(kind: dict[str, str], key: str, body: bytes | None = None) -> httpx.Response:
        nonlocal solved
        solved = 0
        headers = {**alice, **kind, "Idempotency-Key": key, "Prefer": "wait=0"}
        return await client.post("/v1/jobs", content=body or json.dumps(SMOKE), headers=headers)

    answers = {}
    for name, kind in (("own", own), ("general", general)):
        first = await post(kind, f"same-{name}")
        assert first.status_code == 202, first.text
        assert solved == (0 if name == "own" else 1), name
        again = await post(own if name == "general" else general, f"same-{name}")
        assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        answers[name] = (first, again)
    for first, again in answers.values():
        for answer in (first, again):
            assert answer.headers["preference-applied"] == "wait=0"
            assert answer.headers["content-type"] == "application/json"
            assert answer.headers["location"] == answer.json()["links"]["self"]
            assert {"ratelimit-limit", "ratelimit-remaining", "x-request-id"} <= set(answer.headers)
        assert {**first.json(), "links": None} == {**again.json(), "links": None}
    own_first, general_first = answers["own"][0], answers["general"][0]
    assert set(own_first.headers) == set(general_first.headers)
    assert set(own_first.json()) == set(general_first.json())
    # Refusals in FastAPI's order on both ways in: a body that is not JSON first (400), then a
    # bad key (401), then, the request counted, a body that is not a job or a header over its
    # limit (422).
    for kind in (own, general):
        stranger = await client.post(
            "/v1/jobs", content=json.dumps(SMOKE), headers={**kind, "Authorization": "Bearer x"}
        )
        assert stranger.status_code == 401 and stranger.json()["code"] == "unauthorized"
    not_a_job = json.dumps({**SMOKE, "surprise": 1})
    bad_key_bad_body = await client.post(
        "/v1/jobs", content=not_a_job, headers={**own, "Authorization": "Bearer x"}
    )
    assert bad_key_bad_body.status_code == 401
    not_json = await client.post(
        "/v1/jobs", content=b"{nope", headers={**own, "Authorization": "Bearer x"}
    )
    assert not_json.status_code == 400 and not_json.json()["code"] == "invalid_json"
    deep = b"[" * 100_000 + b"]" * 100_000  # past the JSON parser's nesting: still a 400
    too_deep = await client.post("/v1/jobs", content=deep, headers={**own, **alice})
    assert too_deep.status_code == 400 and too_deep.json()["code"] == "validation_error"
    before = int((await post(own, "count-0")).headers["ratelimit-remaining"])
    too_long = await post(own, "k" * 256)
    assert too_long.status_code == 422 and solved == 1
    assert int(too_long.headers["ratelimit-remaining"]) == before - 1
    wrong = await post(own, "count-1", not_a_job.encode())
    assert wrong.status_code == 422 and wrong.json()["details"]["errors"][0]["field"] == "surprise"
    assert int(wrong.headers["ratelimit-remaining"]) == before - 2
    untyped = await client.post("/v1/jobs", content=json.dumps(SMOKE), headers=alice)
    assert untyped.status_code == 422 and untyped.json()["code"] == "validation_error"


async def test_idempotency_key_same_body_same_job_other_body_409(
    client: httpx.AsyncClient, alice: dict[str, str], bus: Bus
) -> None:
    headers = {**alice, "Idempotency-Key": "order-42"}
    first = await submit(client, headers)
    again = await submit(client, headers)
    assert first.status_code == 202 and again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = await submit(client, headers, {"model": "cpu-smoke", "input": {"width": 128}})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    info = await bus.js.stream_info(
        bus.names.stream("JOBS"), subjects_filter=bus.names.owner_events_filter("alice")
    )
    assert len(info.state.subjects or {}) == 1  # one job, published once
    # the same key is per owner: bob's identical request is his own job
    bob = await client.post("/v1/keys", json={"owner": "bob2"}, headers=ADMIN)
    bob_headers = {"Authorization": f"Bearer {bob.json()['secret']}", "Idempotency-Key": "order-42"}
    assert (await submit(client, bob_headers)).json()["id"] != first.json()["id"]


async def test_concurrent_retries_with_one_idempotency_key_make_one_job(
    client: httpx.AsyncClient, alice: dict[str, str], bus: Bus
) -> None:
    headers = {**alice, "Idempotency-Key": "order-77"}
    answers = await asyncio.gather(*(submit(client, headers) for _ in range(6)))
    # each is the job (202) or "still in flight" (409), never a failure
    assert {a.status_code for a in answers} <= {202, 409}, [a.text for a in answers]
    ids = {a.json()["id"] for a in answers if a.status_code == 202}
    assert len(ids) == 1
    info = await bus.js.stream_info(
        bus.names.stream("JOBS"), subjects_filter=bus.names.owner_events_filter("alice")
    )
    assert len(info.state.subjects or {}) == 1  # one job, published once


async def recorded_key(bus: Bus, key: str, age_s: float) -> str:
    """What a request leaves after recording ``key`` and before publishing its job."""
    job_id = new_job_id()
    digest = body_digest(JobCreate.model_validate(SMOKE))
    created = utcnow() - timedelta(seconds=age_s)
    record = IdempotencyRecord(job_id=job_id, body_sha256=digest, created_at=created)
    kv = await bus.kv(bus.names.bucket("idempotency"))
    await kv.put(Submitter._idem_key(Principal(owner_id="alice"), key), record.to_bytes())
    return job_id


async def test_a_retry_while_its_key_is_being_handled_is_409_and_takes_no_slot(
    client: httpx.AsyncClient, alice: dict[str, str], bus: Bus
) -> None:
    await recorded_key(bus, "order-88", age_s=0.5)
    before = await active_count(bus, "alice")
    retry = await submit(client, {**alice, "Idempotency-Key": "order-88"})
    assert retry.status_code == 409 and retry.json()["code"] == "idempotency_conflict"
    assert retry.headers["retry-after"] == "1"
    assert await active_count(bus, "alice") == before


async def test_a_key_recorded_by_a_gateway_that_died_publishes_its_job_on_retry(
    client: httpx.AsyncClient, alice: dict[str, str], bus: Bus
) -> None:
    job_id = await recorded_key(bus, "order-89", age_s=120)
    before = await active_count(bus, "alice")
    retry = await submit(client, {**alice, "Idempotency-Key": "order-89"})
    assert retry.status_code == 202 and retry.json()["id"] == job_id
    assert await active_count(bus, "alice") == before + 1


async def first_job_of(orchestrator: Orchestrator, owner: str) -> str:
    """The id of ``owner``'s first job, once its submission is published (5 s at most)."""
    for _ in range(100):
        await asyncio.sleep(0.05)
        ids = await orchestrator.bus.js.stream_info(
            orchestrator.names.stream("JOBS"),
            subjects_filter=orchestrator.names.owner_events_filter(owner),
        )
        if ids.state.subjects:
            return next(iter(ids.state.subjects)).split(".")[-2]
    raise AssertionError(f"no job of {owner} was published")


async def test_prefer_wait_returns_the_finished_job(
    client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator
) -> None:
    async def finish_soon() -> None:
        await orchestrator.run(await first_job_of(orchestrator, "alice"))

    runner = asyncio.create_task(finish_soon())
    response = await submit(client, {**alice, "Prefer": "wait=5"})
    await runner
    assert response.status_code == 200, response.text
    assert response.headers["preference-applied"] == "wait=5"
    job = response.json()
    assert job["status"] == "succeeded" and len(job["outputs"]) == 1
    # without the job ending, the wait gives up after N seconds with 202
    slow = await submit(client, {**alice, "Prefer": "wait=1"}, {"model": "cpu-smoke", "input": {}})
    assert slow.status_code == 202 and slow.json()["status"] == "queued"


async def test_a_waiting_answer_comes_from_the_final_record_before_its_event(
    client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator
) -> None:
    """The orchestrator writes a job's end, then publishes the event saying so: the answer of
    ``Prefer: wait`` goes out on the record (here the event never comes)."""
    heard: list[str] = []

    async def end_without_event() -> None:
        record = await orchestrator.queued(await first_job_of(orchestrator, "alice"))
        running = record.model_copy(update={"status": JobState.RUNNING})
        await orchestrator.write(running)  # not an end: the wait goes on
        await asyncio.sleep(0.3)
        heard.append("running")
        await orchestrator.write(
            running.model_copy(
                update={
                    "status": JobState.FAILED,
                    "last_event": EventKind.FAILED,
                    "finished_at": utcnow(),
                    "error": JobError(code=ErrorCode.COMFY_NO_OUTPUT, message="none"),
                }
            )
        )

    runner = asyncio.create_task(end_without_event())
    started = time.monotonic()
    response = await submit(client, {**alice, "Prefer": "wait=20"})
    await runner
    assert response.status_code == 200, response.text
    assert heard == ["running"] and time.monotonic() - started < 10
    job = response.json()
    assert job["status"] == "failed" and job["error"]["code"] == "comfy_no_output"


async def test_a_waiter_hears_only_the_end_a_follower_every_event(
    gateway: FastAPI, client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator
) -> None:
    """A listener for a job's end (``Prefer: wait``) is not woken by its other events (they
    are not even parsed for it); one following the job gets them all."""
    fanout = gateway.state.gateway.fanout
    job = (await submit(client, alice)).json()
    with fanout.listen(job_id=job["id"], ends=True) as waiter, fanout.listen(job["id"]) as all_:
        await fanout.live()
        await orchestrator.run(job["id"])
        kinds: list[str] = []
        while "completed" not in kinds:
            kinds.append((await asyncio.wait_for(all_.queue.get(), 5))[1].kind.value)
        ends = []
        while not waiter.queue.empty():
            ends.append((await waiter.queue.get())[1])
    assert kinds[0] == "started" and "progress" in kinds
    assert ends and all(e.kind.value == "completed" and e.job_id == job["id"] for e in ends)


async def test_a_waiter_parses_its_jobs_final_record_only(
    gateway: FastAPI,
    client: httpx.AsyncClient,
    alice: dict[str, str],
    orchestrator: Orchestrator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Of a waited-for job's stored records, only the one that ends it is parsed (the queued
    and running ones are passed over as they arrive); one whose input reads like an ending is
    parsed, and is no ending."""
    fanout = gateway.state.gateway.fanout
    parsed: list[str] = []

    class Counted(JobRecord):
        @classmethod
        def from_bytes(cls, raw: bytes | str) -> JobRecord:  # type: ignore[override]
            record = JobRecord.from_bytes(raw)
            parsed.append(record.status.value)
            return record

    monkeypatch.setattr(fanout_module, "JobRecord", Counted)
    job = (await submit(client, alice)).json()
    with fanout.listen(job_id=job["id"], ends=True) as waiter:
        record = await orchestrator.queued(job["id"])
        lookalike = {**record.input, "note": "x", "last_event": "completed"}
        await orchestrator.write(record.model_copy(update={"input": lookalike}))
        await orchestrator.run(job["id"])
        _, end = await asyncio.wait_for(waiter.queue.get(), 5)
    assert end.kind is EventKind.COMPLETED and end.record is not None
    assert parsed == ["queued", "succeeded"]  # the look-alike, then the end


async def test_the_feed_of_events_is_on_only_while_someone_follows_them(
    gateway: FastAPI, client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator
) -> None:
    """Answers that wait for a job's end need no event: with no follower, the gateway receives
    none. A follower turns the feed on; it is dropped once no one has followed for a while."""
    fanout = gateway.state.gateway.fanout
    fanout.linger_s = 0.3

    async def finish_soon() -> None:
        await orchestrator.run(await first_job_of(orchestrator, "alice"))

    runner = asyncio.create_task(finish_soon())
    waited = await submit(client, {**alice, "Prefer": "wait=5"})
    await runner
    assert waited.status_code == 200 and waited.json()["status"] == "succeeded"
    assert not fanout.live_feed
    job = (await submit(client, alice)).json()
    with fanout.listen(job["id"]) as follower:
        await fanout.live()
        assert fanout.live_feed
        await orchestrator.run(job["id"])
        kinds = [(await asyncio.wait_for(follower.queue.get(), 5))[1].kind.value]
        while kinds[-1] != "completed":
            kinds.append((await asyncio.wait_for(follower.queue.get(), 5))[1].kind.value)
    assert kinds[0] == "started"
    assert fanout.live_feed  # kept a while for the next follower
    for _ in range(50):
        await asyncio.sleep(0.05)
        if not fanout.live_feed:
            break
    assert not fanout.live_feed
    with fanout.listen(owner="alice") as again:  # and turned on again
        await fanout.live()
        late = (await submit(client, alice)).json()
        await orchestrator.run(late["id"])
        seen = (await asyncio.wait_for(again.queue.get(), 5))[1]
    assert seen.job_id == late["id"]


async def test_a_gateway_stopping_while_its_feed_subscribes_leaves_no_feed_behind(
    bus: Bus,
) -> None:
    """A follower's first ``live()`` subscribes the feed; a stop meanwhile waits for that
    subscription and takes it down, and no feed is subscribed after the stop."""
    fanout = Fanout(bus)
    await fanout.start()
    turning_on = asyncio.ensure_future(fanout.live())
    await asyncio.sleep(0)  # the subscription is on its way to the server
    await fanout.stop()
    await turning_on
    assert not fanout.live_feed
    await fanout.live()  # a follower arriving after the stop
    assert not fanout.live_feed


async def test_read_own_job_404_for_another_owners_admin_sees_all(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    job = (await submit(client, alice)).json()
    mine = await client.get(f"/v1/jobs/{job['id']}", headers=alice)
    assert mine.status_code == 200 and mine.json()["status"] == "queued"
    theirs = await client.get(f"/v1/jobs/{job['id']}", headers=bob)
    assert theirs.status_code == 404 and theirs.json()["code"] == "not_found"
    missing = await client.get("/v1/jobs/job_01kax7r2m0a1b2c3d4e5f6g7h8", headers=alice)
    assert missing.status_code == 404
    garbage = await client.get("/v1/jobs/..%2F..", headers=alice)
    assert garbage.status_code == 404
    admin = await client.get(f"/v1/jobs/{job['id']}", headers=ADMIN)
    assert admin.status_code == 200 and admin.json()["id"] == job["id"]
    assert (await client.delete(f"/v1/jobs/{job['id']}", headers=bob)).status_code == 404


async def test_job_view_comes_from_the_record_once_written(
    client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator
) -> None:
    job = (await submit(client, alice)).json()
    await orchestrator.run(job["id"], outputs=2)
    view = (await client.get(f"/v1/jobs/{job['id']}", headers=alice)).json()
    assert view["status"] == "succeeded" and [o["index"] for o in view["outputs"]] == [0, 1]
    out = view["outputs"][0]
    assert out["kind"] == "image" and out["width"] == 16 and out["height"] == 8
    assert "X-Amz-Signature" in out["url"] and out["b64_json"] is None
    async with httpx.AsyncClient() as outside:  # the presigned link works against the real S3
        fetched = await outside.get(out["url"])
    assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG")


async def test_list_newest_first_with_cursor_and_filters(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    bob: dict[str, str],
    orchestrator: Orchestrator,
) -> None:
    ids = [(await submit(client, alice)).json()["id"] for _ in range(5)]
    await submit(client, bob)
    await orchestrator.run(ids[1])
    page = (await client.get("/v1/jobs", params={"limit": 2}, headers=alice)).json()
    assert [j["id"] for j in page["data"]] == [ids[4], ids[3]]
    assert page["has_more"] and page["next_cursor"] == ids[3]
    rest = (
        await client.get(
            "/v1/jobs", params={"limit": 10, "cursor": page["next_cursor"]}, headers=alice
        )
    ).json()
    assert [j["id"] for j in rest["data"]] == [ids[2], ids[1], ids[0]] and not rest["has_more"]
    done = (await client.get("/v1/jobs", params={"status": "succeeded"}, headers=alice)).json()
    assert [j["id"] for j in done["data"]] == [ids[1]]
    none = (await client.get("/v1/jobs", params={"model": "test-sdxl"}, headers=alice)).json()
    assert none["data"] == []
    future = (
        await client.get("/v1/jobs", params={"since": "2999-01-01T00:00:00Z"}, headers=alice)
    ).json()
    assert future["data"] == []
    other = await client.get("/v1/jobs", params={"owner": "bob"}, headers=alice)
    assert other.status_code == 403
    as_admin = (await client.get("/v1/jobs", params={"owner": "bob"}, headers=ADMIN)).json()
    assert len(as_admin["data"]) == 1


async def test_cancel_finished_job_409_and_running_job_via_orchestrator(
    client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator, bus: Bus
) -> None:
    done = (await submit(client, alice)).json()
    await orchestrator.run(done["id"])
    refused = await client.delete(f"/v1/jobs/{done['id']}", headers=alice)
    assert refused.status_code == 409 and refused.json()["code"] == "job_already_terminal"

    live = (await submit(client, alice)).json()
    nobody = await client.delete(f"/v1/jobs/{live['id']}", headers=alice)
    assert nobody.status_code == 503 and nobody.json()["code"] == "service_unavailable"

    asked: list[CancelRequest] = []

    async def responder(delivery: Delivery) -> CancelReply:
        request = delivery.parse(CancelRequest)
        asked.append(request)
        if request.job_id == live["id"]:
            return CancelReply(ok=True, status=JobState.CANCELLED)
        return CancelReply(ok=False, status=JobState.SUCCEEDED, code="job_already_terminal")

    sub = await serve(bus, bus.names.cancel_request(), "orchestrator", responder)
    try:
        accepted = await client.delete(f"/v1/jobs/{live['id']}", headers=alice)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["status"] == "cancelled"
        assert asked[0].owner == "alice" and asked[0].job_id == live["id"]
        race = (await submit(client, alice)).json()  # finished meanwhile, says the orchestrator
        conflict = await client.delete(f"/v1/jobs/{race['id']}", headers=alice)
        assert conflict.status_code == 409 and conflict.json()["code"] == "job_already_terminal"
    finally:
        await sub.unsubscribe()


async def test_outputs_redirect_content_and_b64_json(
    client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator
) -> None:
    job = (await submit(client, alice, {**SMOKE, "response_format": "b64_json"})).json()
    await orchestrator.run(job["id"])
    redirect = await client.get(f"/v1/jobs/{job['id']}/outputs/0", headers=alice)
    assert redirect.status_code == 307 and "X-Amz-Signature" in redirect.headers["location"]
    content = await client.get(f"/v1/jobs/{job['id']}/outputs/0/content", headers=alice)
    assert content.status_code == 200 and content.headers["content-type"] == "image/png"
    assert content.content == png(16, 8)
    missing = await client.get(f"/v1/jobs/{job['id']}/outputs/5/content", headers=alice)
    assert missing.status_code == 404
    view = (await client.get(f"/v1/jobs/{job['id']}", headers=alice)).json()
    assert base64.b64decode(view["outputs"][0]["b64_json"]) == png(16, 8)


async def test_webhook_is_kept_and_internal_targets_refused(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    hook = {"url": "https://hooks.example.com/comfyline", "events": ["completed"]}
    ok = await submit(client, alice, {**SMOKE, "webhook": hook})
    assert ok.status_code == 202 and ok.json()["webhook"] == hook
    for url in ("https://127.0.0.1/hook", "https://localhost:8080/x", "ftp://hooks.example.com/"):
        refused = await submit(client, alice, {**SMOKE, "webhook": {"url": url}})
        assert refused.status_code == 422, url
    bad_event = await submit(client, alice, {**SMOKE, "webhook": {**hook, "events": ["nope"]}})
    assert bad_event.status_code == 422


async def test_a_status_filter_finds_a_rare_state_behind_many_other_jobs(
    client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator
) -> None:
    """Two old timed-out jobs behind 1,100 newer succeeded ones: a full page, no empty ones."""

    async def seed(kind: EventKind, status: JobState) -> str:
        submitted = submitted_event("cpu-smoke", owner="alice")
        job_id = submitted.job_id
        record = JobRecord.from_submitted(submitted).model_copy(update={"status": status})
        await orchestrator.write(record)
        subject = orchestrator.names.job_event("alice", job_id, "submitted")
        await orchestrator.bus.publish(subject, submitted, msg_id=f"{job_id}:submitted")
        await orchestrator.event(record, kind)
        return job_id

    old = [await seed(EventKind.TIMED_OUT, JobState.TIMED_OUT) for _ in range(2)]
    for start in range(0, 1100, 100):
        await asyncio.gather(
            *(seed(EventKind.COMPLETED, JobState.SUCCEEDED) for _ in range(start, start + 100))
        )
    page = await client.get("/v1/jobs", params={"status": "timed_out", "limit": 5}, headers=alice)
    assert page.status_code == 200, page.text
    body = page.json()
    assert [j["id"] for j in body["data"]] == old[::-1] and body["has_more"] is False
    live = await client.get("/v1/jobs", params={"status": "queued"}, headers=alice)
    assert live.json()["data"] == []


async def test_a_lone_surrogate_is_refused_with_422_and_the_connection_stays_usable(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    headers = {**alice, "Content-Type": "application/json"}
    for body in (
        b'{"model": "cpu-smoke", "input": {}, "metadata": {"note": "\\ud800"}}',
        b'{"model": "txt2img-sdxl", "input": {"prompt": "a fox \\uDFFF"}}',
        b'{"model": "cpu-smoke", "input": {}, "metadata": {"\\ud800": "key"}}',
    ):
        refused = await client.post("/v1/jobs", content=body, headers=headers)
        assert refused.status_code == 422, refused.text
        error = refused.json()
        assert error["code"] == "validation_error" and "surrogate" in error["error"]
    # A surrogate pair is one character (an emoji), not an error; the connection still works.
    pair = b'{"model": "cpu-smoke", "input": {}, "metadata": {"note": "\\ud83e\\udd8a"}}'
    accepted = await client.post("/v1/jobs", content=pair, headers=headers)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["metadata"] == {"note": "\U0001f98a"}
