"""`/api/jobs` exists only on releases newer than 0.3.64: each test detects its absence (the
static fallback's 404 with an empty body, or 405 for POST) and skips with that reason."""

from __future__ import annotations

import uuid

import pytest

from comfyline.testkit.comfyui import ComfyClient, empty_image_graph, is_done, slow_graph

ABSENT = "this server has no /api/jobs (ComfyUI 0.3.64 answers with its static 404/405)"


async def _require_jobs_api(comfy: ComfyClient) -> None:
    probe = await comfy.get(f"/api/jobs/{uuid.uuid4()}")
    if probe.status in (404, 405) and probe.body in (b"", b"404: Not Found"):
        pytest.skip(ABSENT)


async def test_absence_of_jobs_api_is_a_plain_404_or_405(comfy: ComfyClient) -> None:
    probe = await comfy.get(f"/api/jobs/{uuid.uuid4()}")
    if probe.status == 404 and probe.body not in (b"", b"404: Not Found"):
        pytest.skip("this server has /api/jobs (a release newer than ComfyUI 0.3.64)")
    assert (probe.status, probe.body) == (404, b"")
    cancel = await comfy.request("POST", f"/api/jobs/{uuid.uuid4()}/cancel")
    assert cancel.status in (404, 405)


async def test_unknown_job_is_404_job_not_found(comfy: ComfyClient) -> None:
    await _require_jobs_api(comfy)
    reply = await comfy.get(f"/api/jobs/{uuid.uuid4()}")
    assert (reply.status, reply.json()) == (404, {"error": "Job not found"})


async def test_finished_job_is_completed_with_outputs(comfy: ComfyClient) -> None:
    await _require_jobs_api(comfy)
    socket = await comfy.connect()
    prompt_id, _ = await comfy.run(empty_image_graph("jobs"), socket)
    job = await comfy.get_json(f"/api/jobs/{prompt_id}")
    assert (job["id"], job["status"]) == (prompt_id, "completed")
    assert job["outputs"]["2"]["images"][0]["type"] == "output"
    assert job["execution_status"]["status_str"] == "success"


async def test_cancel_pending_or_running_is_true_finished_or_unknown_is_false(
    comfy: ComfyClient,
) -> None:
    await _require_jobs_api(comfy)
    socket = await comfy.connect()
    running = await comfy.submit(slow_graph(2), socket)
    pending = await comfy.submit(empty_image_graph(), socket)
    assert (await comfy.get_json(f"/api/jobs/{pending}"))["status"] == "pending"
    assert (await comfy.post(f"/api/jobs/{pending}/cancel")).json() == {"cancelled": True}
    assert (await comfy.post(f"/api/jobs/{running}/cancel")).json() == {"cancelled": True}
    await socket.wait_for(is_done(running), within=60)
    assert (await comfy.get_json(f"/api/jobs/{running}"))["status"] == "cancelled"
    assert (await comfy.post(f"/api/jobs/{running}/cancel")).json() == {"cancelled": False}
    unknown = await comfy.post(f"/api/jobs/{uuid.uuid4()}/cancel")
    assert unknown.json() == {"cancelled": False}
