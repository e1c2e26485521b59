"""Models, status, health, usage, prompt enhancement, the docs and the playground."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from comfyline.catalogue import Catalogue, validate_input
from comfyline.contracts import (
    EnhanceReply,
    EnhanceRequest,
    ErrorReply,
    RunJob,
    ServerStatus,
    UsageRecord,
    WorkerHeartbeat,
)
from comfyline.gateway import Settings, create_app
from comfyline.gateway.errors import OPENAI_PATHS
from comfyline.runtime import Bus, serve
from comfyline.runtime.consume import Delivery

from .conftest import ADMIN, SDXL_TEST, new_key


async def heartbeat(bus: Bus, worker_id: str, models: list[str], busy: bool = False) -> None:
    beat = WorkerHeartbeat(
        worker_id=worker_id,
        models=models,
        servers=[
            ServerStatus(
                url="http://127.0.0.1:8188",
                healthy=True,
                busy=busy,
                job_id="job_x" if busy else None,
            )
        ],
        started_at=datetime.now(UTC),
    )
    kv = await bus.kv(bus.names.bucket("workers"))
    await kv.put(worker_id, beat.to_bytes())


async def test_models_with_schema_limits_and_live_availability(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    user = await new_key(client, "mo")
    listed = (await client.get("/v1/models", headers=user)).json()["data"]
    by_name = {m["name"]: m for m in listed}
    assert {"cpu-smoke", "test-sdxl"} <= set(by_name)  # built-in + the models bucket
    sdxl = by_name["test-sdxl"]
    assert sdxl["version"] == 3 and sdxl["parameters"]["properties"]["width"]["multipleOf"] == 64
    assert sdxl["limits"]["max_queue"] == 2 and sdxl["limits"]["max_prompt_chars"] == 2000
    assert sdxl["availability"]["available"] is False and "graph" not in sdxl
    await heartbeat(bus, "w1", ["cpu-smoke"], busy=True)
    await heartbeat(bus, "w2", ["cpu-smoke"])
    smoke = (await client.get("/v1/models/cpu-smoke", headers=user)).json()
    assert smoke["availability"] == {
        "available": True,
        "workers": 2,
        "servers": 2,
        "idle_servers": 1,
        "running": 1,
        "queue_depth": 0,
        "paused": False,
        "reason": None,
        "missing": {},
    }
    missing = await client.get("/v1/models/nope", headers=user)
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_model"


async def test_status_reports_queue_depth_running_and_workers(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    user = await new_key(client, "sol")
    await heartbeat(bus, "w1", ["cpu-smoke"], busy=True)
    for n in range(3):
        work = RunJob(
            job_id=f"job_{n:026d}",
            owner="x",
            model="cpu-smoke",
            template_version=1,
            input={},
            output_prefix="o/",
        )
        await bus.publish(bus.names.work("cpu-smoke"), work, msg_id=f"s{n}")
    status = (await client.get("/v1/status", headers=user)).json()
    assert status["models"]["cpu-smoke"]["queue_depth"] == 3 and status["queue_depth"] == 3
    assert status["running"] == 1 and status["status"] == "degraded"  # test-sdxl has no worker
    assert status["workers"][0]["worker_id"] == "w1" and status["workers"][0]["busy"] == 1


async def test_health_and_readiness(client: httpx.AsyncClient, settings: Settings) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ready",
        "nats": True,
        "s3": True,
        "workers": 0,
        "notes": ["no worker is live: jobs are accepted and wait for one"],
    }
    cold = create_app(settings)  # not started: nothing to be ready with
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cold), base_url="http://c"
    ) as other:
        cold_ready = await other.get("/readyz")
        assert cold_ready.status_code == 503 and cold_ready.json()["details"] == {
            "nats": False,
            "s3": False,
        }
        assert (await other.get("/healthz")).status_code == 200
        starting = await other.get("/v1/jobs", headers=ADMIN)
        assert starting.status_code == 503 and starting.json()["code"] == "service_unavailable"


async def test_usage_per_model_and_period(client: httpx.AsyncClient, bus: Bus) -> None:
    user = await new_key(client, "una")
    kv = await bus.kv(bus.names.bucket("usage"))
    rows = [
        ("una", "cpu-smoke", "2026-11-20", 2, 1.0, 0.0),
        ("una", "cpu-smoke", "2026-11-21", 3, 2.0, 0.0),
        ("una", "test-sdxl", "2026-11-21", 1, 10.0, 0.01),
        ("una", "test-sdxl", "2026-10-02", 5, 50.0, 0.05),
        ("zed", "test-sdxl", "2026-11-21", 9, 90.0, 0.09),
    ]
    for owner, model, day, jobs, gpu, cost in rows:
        record = UsageRecord(
            owner=owner, model=model, day=day, jobs=jobs, succeeded=jobs, gpu_seconds=gpu, cost=cost
        )
        await kv.put(f"{owner}.{model}.{day}", record.to_bytes())
    daily = (
        await client.get(
            "/v1/usage", params={"since": "2026-11-01", "until": "2026-11-30"}, headers=user
        )
    ).json()
    assert [(d["period"], d["model"], d["jobs"]) for d in daily["data"]] == [
        ("2026-11-20", "cpu-smoke", 2),
        ("2026-11-21", "cpu-smoke", 3),
        ("2026-11-21", "test-sdxl", 1),
    ]
    assert daily["totals"]["jobs"] == 6 and daily["totals"]["gpu_seconds"] == 13.0
    monthly = (
        await client.get(
            "/v1/usage",
            params={"period": "month", "since": "2026-01-01", "until": "2026-12-31"},
            headers=user,
        )
    ).json()
    assert [(d["period"], d["model"], d["jobs"]) for d in monthly["data"]] == [
        ("2026-10", "test-sdxl", 5),
        ("2026-11", "cpu-smoke", 5),
        ("2026-11", "test-sdxl", 1),
    ]
    assert (await client.get("/v1/usage", params={"owner": "zed"}, headers=user)).status_code == 403
    theirs = (
        await client.get(
            "/v1/usage",
            params={"owner": "zed", "since": "2026-11-01", "until": "2026-11-30"},
            headers=ADMIN,
        )
    ).json()
    assert theirs["totals"]["jobs"] == 9
    bad = await client.get("/v1/usage", params={"since": "yesterday"}, headers=user)
    assert bad.status_code == 422


async def test_enhance_through_the_gateway(client: httpx.AsyncClient, bus: Bus) -> None:
    user = await new_key(client, "vi")
    body = {"model": "test-sdxl", "prompt": "a red fox"}
    nobody = await client.post("/v1/prompts/enhance", json=body, headers=user)
    assert nobody.status_code == 503 and nobody.json()["code"] == "enhancer_unavailable"

    async def enhancer(delivery: Delivery) -> EnhanceReply | ErrorReply:
        request = delivery.parse(EnhanceRequest)
        if request.prompt == "refuse":
            return ErrorReply(error="not allowed", code="content_policy")
        reply = EnhanceReply.model_validate(
            {
                "enhancement": {
                    "original_prompt": request.prompt,
                    "prompt": f"{request.prompt}, detailed",
                    "strategy": "rules",
                    "tokenizer": "clip",
                    "tokens_before": 3,
                    "tokens_after": 5,
                    "budget": SDXL_TEST.prompt.budget_tokens if SDXL_TEST.prompt else 0,
                    "expansion_pct": 66.0,
                    "compressed": False,
                }
            }
        )
        return reply

    sub = await serve(bus, bus.names.enhance(), "enhancer", enhancer)
    try:
        ok = await client.post("/v1/prompts/enhance", json=body, headers=user)
        assert ok.status_code == 200 and ok.json()["enhancement"]["prompt"] == "a red fox, detailed"
        assert ok.json()["enhancement"]["budget"] == 75
        refused = await client.post(
            "/v1/prompts/enhance", json={**body, "prompt": "refuse"}, headers=user
        )
        assert refused.status_code == 422 and refused.json()["code"] == "content_policy"
        unknown = await client.post(
            "/v1/prompts/enhance", json={**body, "model": "nope"}, headers=user
        )
        assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_model"
        too_long = await client.post(
            "/v1/prompts/enhance", json={**body, "prompt": "x" * 2001}, headers=user
        )
        assert too_long.status_code == 422
    finally:
        await sub.unsubscribe()


async def test_openapi_lists_every_route_with_examples(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    routes = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    expected = {
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/{job_id}"),
        ("DELETE", "/v1/jobs/{job_id}"),
        ("GET", "/v1/jobs/{job_id}/outputs/{index}"),
        ("GET", "/v1/jobs/{job_id}/outputs/{index}/content"),
        ("GET", "/v1/jobs/{job_id}/events"),
        ("GET", "/v1/events"),
        ("POST", "/v1/events/token"),
        ("POST", "/v1/assets"),
        ("GET", "/v1/assets"),
        ("GET", "/v1/assets/{asset_id}"),
        ("POST", "/v1/assets/{asset_id}/sign"),
        ("DELETE", "/v1/assets/{asset_id}"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/{name}"),
        ("POST", "/v1/prompts/enhance"),
        ("POST", "/v1/keys"),
        ("GET", "/v1/keys"),
        ("DELETE", "/v1/keys/{key_id}"),
        ("POST", "/v1/keys/webhook-secret"),
        ("GET", "/v1/keys/webhook-secret"),
        ("GET", "/v1/usage"),
        ("GET", "/v1/status"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        *(("POST", path) for path in OPENAI_PATHS),
    }
    assert expected <= routes
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ErrorBody" in schemas
    for name in (
        "JobCreate",
        "JobPublic",
        "JobEventPublic",
        "AssetPublic",
        "ModelPublic",
        "KeyCreated",
        "UsagePublic",
    ):
        assert schemas[name].get("examples"), name
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert operation.get("summary"), (method, path)
            shape = "OpenAIError" if path in OPENAI_PATHS else "ErrorBody"
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert shape in str(response), (method, path, status)
    assert "bearer" in spec["components"]["securitySchemes"]
    # a real example per model, valid against that model's parameters
    examples = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"][
        "examples"
    ]
    catalogue = Catalogue.builtin()
    assert set(examples) == set(catalogue.names())
    for name, example in examples.items():
        assert example["value"]["model"] == name
        validate_input(catalogue.get(name), example["value"]["input"])
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_playground_and_cors(settings: Settings, bus: Bus) -> None:
    app = create_app(settings.model_copy(update={"cors_origins": ["https://app.example.com"]}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw"
        ) as client:
            page = await client.get("/playground")
            assert (
                page.status_code == 200 and "EventSource" in page.text and "/v1/jobs" in page.text
            )
            preflight = await client.options(
                "/v1/jobs",
                headers={
                    "Origin": "https://app.example.com",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,idempotency-key",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
            response = await client.get(
                "/v1/jobs", headers={**ADMIN, "Origin": "https://app.example.com"}
            )
            assert (
                "ratelimit-remaining" in response.headers["access-control-expose-headers"].lower()
            )
            evil = await client.get("/healthz", headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in evil.headers


async def test_a_model_no_live_server_can_run_is_refused_at_once_with_what_is_missing(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    """Servers have reported: one can run cpu-smoke only. txt2img-sdxl is 503 naming the node
    class and model file it lacks; /v1/models and /readyz say the same; cpu-smoke is accepted."""
    lacks = ["model CheckpointLoaderSimple.ckpt_name=sd_xl_base_1.0.safetensors", "node KSampler"]
    beat = WorkerHeartbeat(
        worker_id="w-small",
        models=["cpu-smoke"],
        servers=[
            ServerStatus(
                url="http://10.0.0.5:8188",
                healthy=True,
                busy=False,
                models=["cpu-smoke"],
                missing={"txt2img-sdxl": lacks},
            )
        ],
        started_at=datetime.now(UTC),
    )
    kv = await bus.kv(bus.names.bucket("workers"))
    await kv.put(beat.worker_id, beat.to_bytes())
    user = await new_key(client, "ursula")
    body = {"model": "txt2img-sdxl", "input": {"prompt": "a red fox in snow"}}
    refused = await client.post("/v1/jobs", json=body, headers=user)
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "30"
    error = refused.json()
    assert error["code"] == "model_unavailable" and "node KSampler" in error["error"]
    assert error["details"]["missing"] == {"http://10.0.0.5:8188": lacks}
    smoke = {"model": "cpu-smoke", "input": {"width": 64, "height": 64}}
    assert (await client.post("/v1/jobs", json=smoke, headers=user)).status_code == 202
    # A key that opts into queueing for capacity that is coming gets its job accepted.
    patient = await new_key(client, "patience", limits={"queue_without_capacity": 1})
    queued = await client.post("/v1/jobs", json=body, headers=patient)
    assert queued.status_code == 202, queued.text
    model = (await client.get("/v1/models/txt2img-sdxl", headers=user)).json()
    availability = model["availability"]
    assert availability["available"] is False and "node KSampler" in availability["reason"]
    assert availability["missing"] == {"http://10.0.0.5:8188": lacks}
    ready = (await client.get("/readyz")).json()
    assert ready["workers"] == 1
    assert any(note.startswith("txt2img-sdxl: no live ComfyUI server") for note in ready["notes"])
