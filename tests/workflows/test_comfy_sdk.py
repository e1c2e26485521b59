"""The official Comfy SDK (``comfy-sdk``, unchanged) against Comfyline's ``/api/v2``, pointed at
the gateway through ``COMFY_BASE_URL`` and ``COMFY_API_KEY``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from comfy_sdk import Comfy, ComfyError

from comfyline.comfyui_sim import SimulatorProcess

from .conftest import Fleet
from .test_workflows import graph


async def test_the_comfy_sdk_runs_lists_refuses_and_cancels(
    fleet: Fleet, sims: Callable[..., SimulatorProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sims("--node-delay", "ImageBlur=3")
    await fleet.orchestrator()
    await fleet.worker(sim.url, "worker-a")
    await fleet.servers_known(1)
    key = (await fleet.key("dana", scopes=["workflows"]))["Authorization"].split()[1]
    monkeypatch.setenv("COMFY_BASE_URL", fleet.url)
    monkeypatch.setenv("COMFY_API_KEY", key)

    def run() -> tuple[str, bytes]:
        with Comfy() as client:
            job = client.run(client.workflows.from_json(graph("ImageInvert")), timeout=60)
            outputs = job.get_outputs("9")
            return job.id, outputs[0].to_bytes()

    job_id, png = await asyncio.to_thread(run)
    assert png.startswith(b"\x89PNG")

    def refused() -> ComfyError:
        bad = graph()
        del bad["1"]["inputs"]["width"]
        with Comfy() as client, pytest.raises(ComfyError) as caught:
            client.submit(client.workflows.from_json(bad))
        return caught.value

    error = await asyncio.to_thread(refused)
    assert error.code == "invalid_workflow"

    def cancel() -> tuple[str, str]:
        with Comfy() as client:
            job = client.submit(client.workflows.from_json(graph("ImageBlur")))
            deadline = time.monotonic() + 30
            while job.refresh().status != "running" and time.monotonic() < deadline:
                time.sleep(0.1)
            job.cancel()
            return job.id, job.wait(timeout=60).status

    cancelled_id, status = await asyncio.to_thread(cancel)
    assert status == "canceled"

    def listed() -> list[str]:
        with Comfy() as client:
            return [summary.id for summary in client.list_jobs()]

    ids = await asyncio.to_thread(listed)
    assert ids[:2] == [cancelled_id, job_id]

    not_multipart = await fleet.http.post(
        "/api/v2/assets", headers={"Authorization": f"Bearer {key}"}, content=b"x"
    )
    assert not_multipart.status_code == 415, not_multipart.text
    assert not_multipart.json()["error"]["code"] == "unsupported_media_type"
    missing = await fleet.http.get(
        "/api/v2/jobs/job_nope", headers={"Authorization": f"Bearer {key}"}
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
