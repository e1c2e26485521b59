"""Limits shared by every replica: rate limits, active jobs, queue caps, quotas, body sizes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from comfyline.contracts import RunJob, UsageRecord, owner_token
from comfyline.gateway import Settings, create_app
from comfyline.runtime import Bus

from .conftest import ADMIN, Orchestrator, new_key

SMOKE = {"model": "cpu-smoke", "input": {}}


async def test_rate_limit_is_one_budget_across_two_gateway_instances(
    gateway: FastAPI, settings: Settings
) -> None:
    second = create_app(settings)  # another replica: its own connections, no shared memory
    async with second.router.lifespan_context(second):
        one = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://a")
        two = httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://b")
        async with one, two:
            user = await new_key(one, "rita", limits={"submit_per_min": 4, "active_jobs": 100})
            answers = []
            for client in (one, two, one, two):
                answers.append(await client.post("/v1/jobs", json=SMOKE, headers=user))
            assert [a.status_code for a in answers] == [202, 202, 202, 202]
            assert [a.headers["ratelimit-remaining"] for a in answers] == ["3", "2", "1", "0"]
            limited = await one.post("/v1/jobs", json=SMOKE, headers=user)
            also = await two.post("/v1/jobs", json=SMOKE, headers=user)
    for response in (limited, also):
        assert response.status_code == 429
        body = response.json()
        assert body["code"] == "rate_limited" and body["details"]["route_class"] == "submit"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.headers["ratelimit-limit"] == "4"
        assert response.headers["ratelimit-remaining"] == "0"
        assert response.headers["x-ratelimit-limit"] == "4"
        assert int(response.headers["x-ratelimit-reset"]) > 1_700_000_000
        assert response.headers["ratelimit-policy"] == "4;w=60"


async def test_many_requests_at_once_under_one_key_are_all_counted_none_refused(
    client: httpx.AsyncClient,
) -> None:
    """Concurrent requests of one gateway take turns on the shared counters: none is refused
    for losing compare-and-set races, and every one is counted."""
    user = await new_key(client, "tess", limits={"submit_per_min": 200, "active_jobs": 200})
    answers = await asyncio.gather(
        *(client.post("/v1/jobs", json=SMOKE, headers=user) for _ in range(150))
    )
    assert sorted(a.status_code for a in answers) == [202] * 150, [a.text for a in answers][:3]
    remaining = sorted(int(a.headers["ratelimit-remaining"]) for a in answers)
    assert remaining == list(range(50, 200))


async def _writes(bus: Bus) -> int:
    """How many writes the rate-limit counters have had (their stream's last sequence)."""
    info = await bus.js.stream_info(f"KV_{bus.names.bucket('ratelimits')}")
    return info.state.last_seq


async def _counted(bus: Bus, owner: str, route_class: str) -> int:
    """The shared counter of ``owner``'s ``route_class`` in the current window."""
    kv = await bus.kv(bus.names.bucket("ratelimits"))
    key = next(k for k in await kv.keys() if k.startswith(f"{owner}.{route_class}."))
    return int((await kv.get(key)).value or b"0")


async def test_a_busy_key_is_counted_in_blocks_and_exactly_in_its_headers(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    """Back-to-back requests take their counts from the shared counter in growing blocks, one
    compare-and-set per block; every answer's remaining count is still exact."""
    user = await new_key(client, "bea", limits={"status_per_min": 1000})
    before = await _writes(bus)
    answers = [await client.get("/v1/jobs", headers=user) for _ in range(40)]
    writes = await _writes(bus) - before
    assert [a.status_code for a in answers] == [200] * 40
    remaining = [int(a.headers["ratelimit-remaining"]) for a in answers]
    assert remaining == list(range(999, 959, -1))
    assert writes <= 6, writes  # blocks of 1, 2, 4, 8, 16, 32: six writes for 40 requests
    counted = await _counted(bus, owner_token("bea"), "status")
    assert 40 <= counted <= 40 + 31  # counted ahead, never short


async def test_requests_after_pauses_make_a_round_trip_once_in_four(
    client: httpx.AsyncClient, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key whose requests come a while apart takes small blocks (4, at most a sixteenth of
    its limit): most of its requests need no round trip; headers stay exact, and a small
    budget is still counted request by request."""
    monkeypatch.setattr("comfyline.gateway.limits._LEASE_GROW_S", 0.02)
    user = await new_key(client, "paz", limits={"status_per_min": 1000})
    small = await new_key(client, "pia", limits={"status_per_min": 20})
    for who, limit, expected_writes in ((user, 1000, 3), (small, 20, 12)):
        into = time.time() % 60
        if into > 55:  # (all in one minute's window)
            await asyncio.sleep(61 - into)
        before = await _writes(bus)
        remaining = []
        for _ in range(12):
            await asyncio.sleep(0.05)  # longer than a block's growing time: a pause
            answer = await client.get("/v1/jobs", headers=who)
            assert answer.status_code == 200
            remaining.append(int(answer.headers["ratelimit-remaining"]))
        assert remaining == list(range(limit - 1, limit - 13, -1))
        assert await _writes(bus) - before == expected_writes


async def test_blocks_never_let_replicas_past_the_limit(
    gateway: FastAPI, settings: Settings, bus: Bus
) -> None:
    """Two replicas taking blocks of one budget let through at most its limit together, and
    lose at most their last blocks' unused part to the window."""
    second = create_app(settings)
    async with second.router.lifespan_context(second):
        one = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://a")
        two = httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://b")
        async with one, two:
            user = await new_key(one, "ben", limits={"status_per_min": 64})  # blocks up to 4
            passed = 0
            for _ in range(40):
                for client in (one, one, one, two):
                    passed += (await client.get("/v1/jobs", headers=user)).status_code == 200
    assert await _counted(bus, owner_token("ben"), "status") == 64
    assert 64 - 2 * 3 <= passed <= 64, passed


async def test_route_classes_have_their_own_budgets(client: httpx.AsyncClient) -> None:
    user = await new_key(client, "sam", limits={"status_per_min": 2})
    assert [(await client.get("/v1/jobs", headers=user)).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    assert (await client.post("/v1/jobs", json=SMOKE, headers=user)).status_code == 202


async def test_active_job_cap(client: httpx.AsyncClient, orchestrator: Orchestrator) -> None:
    user = await new_key(client, "tina", limits={"active_jobs": 2, "submit_per_min": 100})
    first = (await client.post("/v1/jobs", json=SMOKE, headers=user)).json()
    await client.post("/v1/jobs", json=SMOKE, headers=user)
    capped = await client.post("/v1/jobs", json=SMOKE, headers=user)
    assert capped.status_code == 429 and capped.json()["code"] == "too_many_active_jobs"
    assert capped.json()["details"] == {"active": 2, "limit": 2}
    await orchestrator.run(first["id"])  # one ends: room again
    assert (await client.post("/v1/jobs", json=SMOKE, headers=user)).status_code == 202


async def test_full_model_queue_is_503_with_retry_after(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    user = await new_key(client, "uma", limits={"submit_per_min": 100})
    body = {"model": "test-sdxl", "input": {"prompt": "a fox"}}
    assert (await client.post("/v1/jobs", json=body, headers=user)).status_code == 202
    for n in range(2):  # the test model's max_queue is 2: fill its work queue
        work = RunJob(
            job_id=f"job_{n:026d}",
            owner="x",
            model="test-sdxl",
            template_version=3,
            input={},
            output_prefix="o/",
        )
        await bus.publish(bus.names.work("test-sdxl"), work, msg_id=f"w{n}")
    full = await client.post("/v1/jobs", json=body, headers=user)
    assert full.status_code == 503 and full.json()["code"] == "queue_full"
    assert full.headers["retry-after"] == "10"
    assert full.json()["details"]["queue_depth"] == 2
    # other models are unaffected; a key may raise the cap
    assert (await client.post("/v1/jobs", json=SMOKE, headers=user)).status_code == 202
    big = await new_key(client, "vic", limits={"max_queue": 50})
    assert (await client.post("/v1/jobs", json=body, headers=big)).status_code == 202


async def test_spend_quota(client: httpx.AsyncClient, bus: Bus) -> None:
    user = await new_key(client, "wes", limits={"spend_per_day": 1.0})
    assert (await client.post("/v1/jobs", json=SMOKE, headers=user)).status_code == 202
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    kv = await bus.kv(bus.names.bucket("usage"))
    record = UsageRecord(owner="wes", model="test-sdxl", day=day, jobs=9, succeeded=9, cost=1.25)
    await kv.put(f"wes.test-sdxl.{day}", record.to_bytes())
    over = await client.post("/v1/jobs", json=SMOKE, headers=user)
    assert over.status_code == 429 and over.json()["code"] == "quota_exceeded"
    assert over.json()["details"]["spent"] == 1.25 and int(over.headers["retry-after"]) > 0


async def test_body_size_limits(client: httpx.AsyncClient) -> None:
    user = await new_key(client, "xia")
    huge = {"model": "cpu-smoke", "input": {}, "metadata": {"k": "v" * 2_000_000}}
    response = await client.post("/v1/jobs", json=huge, headers=user)
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(40):
            yield b" " * 50_000

    streamed = await client.post(
        "/v1/jobs", content=chunks(), headers={**user, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413 and streamed.json()["code"] == "payload_too_large"
    assert (await client.get("/v1/jobs", headers=ADMIN)).status_code == 200


async def test_concurrent_submissions_never_pass_the_active_cap(
    client: httpx.AsyncClient,
) -> None:
    user = await new_key(client, "vera", limits={"active_jobs": 1, "submit_per_min": 100})
    answers = await asyncio.gather(
        *(client.post("/v1/jobs", json=SMOKE, headers=user) for _ in range(6))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [202, 429, 429, 429, 429, 429], [a.text for a in answers]
