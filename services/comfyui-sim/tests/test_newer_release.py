"""With `--comfyui-version` above 0.3.64 the simulator plays the newer releases' differences:
`/api/jobs`, the Sec-Fetch-Site check, `missing_node_type`, `invalid_prompt_id`, `create_time`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from comfyline.comfyui_sim.config import Release
from comfyline.testkit.comfyui import ComfyClient, empty_image_graph, is_done, slow_graph

MakeSim = Callable[..., Awaitable[ComfyClient]]


@pytest.fixture
async def newer(make_sim: MakeSim) -> ComfyClient:
    return await make_sim(release=Release("0.33.0"), node_delays={"ImageBlur": 0.2})


def test_release_switches_behaviour_by_version() -> None:
    assert not Release("0.3.64").is_newer and not Release("0.3.9").is_newer
    assert Release("0.3.65").is_newer and Release("0.33.0").has_jobs_api
    assert Release("0.3.64").missing_node_error_type == "invalid_prompt"


async def test_system_stats_reports_the_played_version(newer: ComfyClient) -> None:
    stats = await newer.get_json("/system_stats")
    assert stats["system"]["comfyui_version"] == "0.33.0"


async def test_jobs_api_reports_and_cancels_jobs(newer: ComfyClient) -> None:
    missing = await newer.get(f"/api/jobs/{uuid.uuid4()}")
    assert (missing.status, missing.json()) == (404, {"error": "Job not found"})
    socket = await newer.connect()
    running = await newer.submit(slow_graph(2), socket)
    pending = await newer.submit(empty_image_graph(), socket)
    assert (await newer.get_json(f"/api/jobs/{running}"))["status"] == "in_progress"
    assert (await newer.get_json(f"/api/jobs/{pending}"))["status"] == "pending"
    listing = await newer.get_json("/api/jobs", status="pending")
    assert [job["id"] for job in listing["jobs"]] == [pending]
    assert (await newer.post(f"/api/jobs/{pending}/cancel")).json() == {"cancelled": True}
    assert (await newer.post(f"/api/jobs/{running}/cancel")).json() == {"cancelled": True}
    await socket.wait_for(is_done(running), within=30)
    assert (await newer.get_json(f"/api/jobs/{running}"))["status"] == "cancelled"
    assert (await newer.post(f"/api/jobs/{running}/cancel")).json() == {"cancelled": False}
    assert await newer.history(pending) == {}
    done = await newer.submit(empty_image_graph(), socket)
    await socket.wait_for(is_done(done))
    job = await newer.get_json(f"/api/jobs/{done}")
    assert job["status"] == "completed" and job["outputs_count"] == 1
    assert job["outputs"]["2"]["images"][0]["type"] == "output"
    batch = await newer.post("/api/jobs/cancel", {"job_ids": ["not-a-uuid"]})
    assert batch.status == 400 and batch.json()["invalid_ids"] == ["not-a-uuid"]


async def test_prompt_id_must_be_a_canonical_uuid(newer: ComfyClient) -> None:
    for bad in ("not-a-uuid", str(uuid.uuid4()).upper(), 12):
        reply = await newer.prompt(empty_image_graph(), prompt_id=bad)  # type: ignore[arg-type]
        assert reply.status == 400
        assert reply.json()["error"]["type"] == "invalid_prompt_id"
    socket = await newer.connect()
    good = await newer.submit(empty_image_graph(), socket)
    await socket.wait_for(is_done(good))


async def test_unknown_class_is_missing_node_type(newer: ComfyClient) -> None:
    graph = empty_image_graph()
    graph["2"]["class_type"] = "NoSuchNode"
    error = (await newer.prompt(graph)).json()["error"]
    assert error == {
        "type": "missing_node_type",
        "message": "Node 'NoSuchNode' not found. The custom node may not be installed.",
        "details": "Node ID '#2'",
        "extra_info": {"node_id": "2", "class_type": "NoSuchNode", "node_title": "NoSuchNode"},
    }
    del graph["2"]["class_type"]
    error = (await newer.prompt(graph)).json()["error"]
    assert error["type"] == "missing_node_type" and "has no class_type" in error["message"]


async def test_sec_fetch_site_cross_site_is_refused(newer: ComfyClient) -> None:
    refused = await newer.request("GET", "/prompt", headers={"Sec-Fetch-Site": "cross-site"})
    assert (refused.status, refused.body) == (403, b"")
    allowed = await newer.request("GET", "/prompt", headers={"Sec-Fetch-Site": "same-origin"})
    assert allowed.status == 200


async def test_queue_items_carry_create_time(newer: ComfyClient) -> None:
    socket = await newer.connect()
    prompt_id = await newer.submit(empty_image_graph(), socket)
    await socket.wait_for(is_done(prompt_id))
    extra = (await newer.history(prompt_id))[prompt_id]["prompt"][3]
    assert isinstance(extra["create_time"], int) and extra["client_id"] == socket.client_id
