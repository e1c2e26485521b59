"""``POST /v1/jobs`` in its own lane (the app's middlewares and handlers, no router) answers
as the whole app does: the same statuses, bodies and headers, refusals included; what the lane
does not take goes through the whole app with its body unchanged. Two gateways side by side,
one with the lane and one without (``submit_lane``), get the same requests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from comfyline.gateway import Settings, create_app
from comfyline.gateway.app import GatewayApp
from comfyline.runtime import Bus, NatsSettings, S3Settings, tracing

from .conftest import SDXL_TEST, make_settings, new_key, publish_models

SMOKE: dict[str, Any] = {"model": "cpu-smoke", "input": {"width": 64, "height": 32, "color": 7}}
ORIGIN = "https://app.example.com"
#: Headers that differ between any two answers (ids, times, counts left).
VARYING = {"date", "location", "x-request-id", "ratelimit-reset", "x-ratelimit-reset"}


@pytest.fixture
async def apps(
    namespace: str, nats_settings: NatsSettings, s3_settings: S3Settings, bus: Bus
) -> AsyncIterator[dict[str, FastAPI]]:
    """Two gateways on one namespace: ``lane`` and ``whole`` (its lane off)."""
    await publish_models(bus, SDXL_TEST)
    made: dict[str, FastAPI] = {}
    for name, on in (("lane", True), ("whole", False)):
        settings = make_settings(
            namespace, nats_settings, s3_settings, submit_lane=on, cors_origins=[ORIGIN]
        )
        made[name] = create_app(settings)
    async with (
        made["lane"].router.lifespan_context(made["lane"]),
        made["whole"].router.lifespan_context(made["whole"]),
    ):
        yield made


def client_of(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://gw.test")


def served(app: FastAPI) -> int:
    assert isinstance(app, GatewayApp) and app.submit_lane is not None
    return app.submit_lane.served


def shape(answer: httpx.Response) -> tuple[int, set[str], Any]:
    """What two answers to the same request share: status, header names, and the body with
    its ids and times left out (an error's code and details kept)."""
    body: Any = answer.json() if answer.content else None
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if not k.endswith(("_at", "id", "links"))}
        body.pop("request_id", None)
    return answer.status_code, set(answer.headers) - VARYING, body


async def both(
    apps: dict[str, FastAPI], keys: dict[str, dict[str, str]], **request: Any
) -> tuple[httpx.Response, httpx.Response, int]:
    """The same request to both gateways (each with its own owner's key); the lane's answer,
    the whole app's, and how many the lane answered itself."""
    answers = []
    before = served(apps["lane"])
    for name in ("lane", "whole"):
        headers = {**keys[name], **request.get("headers", {})}
        async with client_of(apps[name]) as client:
            answers.append(
                await client.request("POST", "/v1/jobs", **{**request, "headers": headers})
            )
    return answers[0], answers[1], served(apps["lane"]) - before


async def test_the_lane_answers_submissions_and_refusals_as_the_whole_app(
    apps: dict[str, FastAPI],
) -> None:
    async with client_of(apps["whole"]) as admin:
        keys = {
            "lane": await new_key(admin, "lane-owner", limits={"submit_per_min": 500}),
            "whole": await new_key(admin, "whole-owner", limits={"submit_per_min": 500}),
        }
    # (request, taken by the lane, status)
    cases: list[tuple[dict[str, Any], bool, int]] = [
        ({"json": SMOKE}, True, 202),
        (
            {"json": SMOKE, "headers": {"Prefer": "wait=0", "X-Request-ID": "req-given-1"}},
            True,
            202,
        ),
        ({"json": SMOKE, "headers": {"Origin": ORIGIN}}, True, 202),
        ({"json": SMOKE, "headers": {"Origin": "https://elsewhere.example"}}, True, 202),
        ({"json": {"model": "nope", "input": {}}}, True, 422),
        ({"json": {"model": "cpu-smoke", "input": {"width": "wide"}}}, True, 422),
        ({"json": SMOKE, "headers": {"Authorization": "Bearer nope"}}, True, 401),
        ({"json": {**SMOKE, "surprise": 1}}, False, 422),
        (
            {"content": b"{nope", "headers": {"Content-Type": "application/json"}},
            False,
            400,
        ),
        ({"json": SMOKE, "headers": {"Idempotency-Key": "k" * 256}}, False, 422),
        (
            {
                "content": json.dumps(SMOKE).encode(),
                "headers": {"Content-Type": "application/vnd.comfyline+json"},
            },
            False,
            202,
        ),
        (
            {
                "content": b'{"model": "cpu-smoke", "input": {}, "metadata": {"a": "\\ud800"}}',
                "headers": {"Content-Type": "application/json"},
            },
            False,
            422,
        ),
        (
            {
                "content": json.dumps({**SMOKE, "metadata": {"a": "x" * 2_000_000}}).encode(),
                "headers": {"Content-Type": "application/json"},
            },
            False,
            413,
        ),
    ]
    for request, taken, status in cases:
        lane, whole, answered = await both(apps, keys, **request)
        assert lane.status_code == status, (request, lane.text)
        assert shape(lane) == shape(whole), request
        assert answered == int(taken), request
        assert lane.headers["x-request-id"]
        given = request.get("headers", {}).get("X-Request-ID")
        assert given is None or lane.headers["x-request-id"] == given
    # An idempotent retry through the lane is the same job, said so.
    key = {"Idempotency-Key": "same-order"}
    first, _, _ = await both(apps, keys, json=SMOKE, headers=key)
    again, again_whole, answered = await both(apps, keys, json=SMOKE, headers=key)
    assert answered == 1 and again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == again_whole.headers["idempotent-replayed"]
    # CORS as the middleware answers it: the allowed origin named, another one not.
    _, _, _ = await both(apps, keys, json=SMOKE)
    allowed, _, _ = await both(apps, keys, json=SMOKE, headers={"Origin": ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN


async def test_a_refused_rate_and_an_unexpected_error_are_answered_as_the_whole_app(
    apps: dict[str, FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client_of(apps["whole"]) as admin:
        keys = {
            "lane": await new_key(admin, "lane-slow", limits={"submit_per_min": 1}),
            "whole": await new_key(admin, "whole-slow", limits={"submit_per_min": 1}),
        }
    await both(apps, keys, json=SMOKE)
    lane, whole, answered = await both(apps, keys, json=SMOKE)
    assert lane.status_code == 429 and answered == 1
    assert shape(lane) == shape(whole)
    assert lane.headers["retry-after"] and lane.json()["code"] == whole.json()["code"]

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("comfyline.gateway.routes.jobs.create_job", broken)
    async with client_of(apps["whole"]) as admin:
        keys = {
            "lane": await new_key(admin, "lane-bug", limits={"submit_per_min": 50}),
            "whole": await new_key(admin, "whole-bug", limits={"submit_per_min": 50}),
        }
    lane, whole, answered = await both(apps, keys, json=SMOKE)
    assert lane.status_code == 500 and answered == 1
    assert shape(lane) == shape(whole) and lane.json()["code"] == "internal_error"


async def test_a_request_runs_in_its_callers_trace_or_a_new_one(
    apps: dict[str, FastAPI], bus: Bus
) -> None:
    """A gateway that exports no spans makes none per request (FastAPI's telemetry is off);
    the job's messages carry the caller's trace on, or a new one per request, either way."""
    async with client_of(apps["whole"]) as admin:
        keys = {
            "lane": await new_key(admin, "lane-trace", limits={"submit_per_min": 50}),
            "whole": await new_key(admin, "whole-trace", limits={"submit_per_min": 50}),
        }
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    seen: dict[str, list[str]] = {"lane": [], "whole": []}
    for traceparent in (caller, None, None):
        extra = {"traceparent": traceparent} if traceparent else {}
        lane, whole, _ = await both(apps, keys, json=SMOKE, headers=extra)
        for name, answer in (("lane", lane), ("whole", whole)):
            owner = f"{name}-trace"
            msg = await bus.js.get_last_msg(
                bus.names.stream("JOBS"),
                bus.names.job_event(owner, answer.json()["id"], "submitted"),
            )
            assert msg.headers is not None
            seen[name].append(msg.headers["traceparent"].split("-")[1])
    for ids in seen.values():
        assert ids[0] == caller.split("-")[1]
        assert len(set(ids)) == 3 and all(len(i) == 32 and int(i, 16) for i in ids)


def test_a_gateway_that_exports_spans_keeps_fastapis_way(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where spans are exported, FastAPI's telemetry makes the request's span: no lane."""
    plain = create_app(settings)
    assert isinstance(plain, GatewayApp) and plain.submit_lane is not None
    monkeypatch.setattr(tracing, "_exporting", True)
    traced = create_app(settings)
    assert isinstance(traced, GatewayApp) and traced.submit_lane is None
