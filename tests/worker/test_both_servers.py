"""The worker against both ComfyUIs in the same run (the ``any_comfyui`` fixture: the simulator
and a real ComfyUI, reached only through their URLs): a cpu-smoke job, cancel while running,
cancel while pending. Model-free stock graphs only, so they run on a CPU-only real server."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import pytest
from PIL import Image

from comfyline.catalogue import Catalogue
from comfyline.contracts import (
    CancelCommand,
    Deadlines,
    ModelTemplate,
    OutputKind,
    OutputSpec,
)
from comfyline.runtime import Bus, ObjectStore
from comfyline.runtime.metrics import OUTPUTS_READ
from comfyline.testkit.fixtures import output_dir_of

from .helpers import RunWatch, Workers, publish_job, queue_ids

#: Three blurs of a 1024x1024 image: seconds of work on a real CPU, three seconds on the
#: simulator of ``any_comfyui``; what a cancel can land in.
BLURS = 3


def slow_graph(prefix: str, color: int = 0x204060, blurs: int = BLURS) -> dict[str, Any]:
    graph: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 1024, "height": 1024, "batch_size": 1, "color": color},
        }
    }
    for n in range(blurs):
        graph[str(n + 2)] = {
            "class_type": "ImageBlur",
            "inputs": {"image": [str(n + 1), 0], "blur_radius": 15, "sigma": 5.0},
        }
    graph["99"] = {  # the output node the slow models name
        "class_type": "SaveImage",
        "inputs": {"images": [str(blurs + 1), 0], "filename_prefix": prefix},
    }
    return graph


SLOW = ModelTemplate(
    name="slow-blur",
    version=1,
    kind="image",
    title="slow blur (tests)",
    description="EmptyImage, three ImageBlurs, SaveImage: stock nodes, no model files",
    graph=slow_graph("comfyline/slow_blur"),
    parameters={"type": "object", "properties": {}},
    bindings=[],
    outputs=[OutputSpec(node="99", kind=OutputKind.IMAGE)],
    deadlines=Deadlines(queue_s=300, run_s=120),
)


def catalogue() -> Catalogue:
    return Catalogue([*Catalogue.builtin(), SLOW])


async def idle(client: httpx.AsyncClient, url: str) -> None:
    """Leave the server as found: nothing pending, nothing running."""
    await client.post(f"{url}/queue", json={"clear": True})
    await client.post(f"{url}/interrupt")
    for _ in range(300):
        if (await queue_ids(client, url)) == (set(), set()):
            return
        await asyncio.sleep(0.1)


async def test_cpu_smoke_runs(
    bus: Bus, store: ObjectStore, workers: Workers, runs: RunWatch, any_comfyui: str
) -> None:
    running = workers([any_comfyui], models=["cpu-smoke"])
    jobs = [
        await publish_job(bus, "cpu-smoke", {"width": 64, "height": 32, "color": 0x3366CC}),
        # identical: ComfyUI answers from its cache with the old file name
        await publish_job(bus, "cpu-smoke", {"width": 64, "height": 32, "color": 0x3366CC}),
    ]
    for job in jobs:
        done = await runs.wait_for(job.job_id, "completed", "failed", timeout=90)
        assert done.kind == "completed", done.error
        [out] = done.outputs
        image = Image.open(io.BytesIO(await store.get_bytes(out.key)))
        assert image.size == (64, 32) and (out.width, out.height) == (64, 32)
        assert image.convert("RGB").getpixel((3, 3)) == (0x33, 0x66, 0xCC)
    server = running.worker.servers[0]
    assert server.healthy and "cpu-smoke" in server.models and server.version


async def test_a_worker_beside_its_comfyui_reads_outputs_from_the_shared_folder(
    bus: Bus, store: ObjectStore, workers: Workers, runs: RunWatch, any_comfyui: str
) -> None:
    """Given the server's output folder, the worker reads a finished job's file there (SaveImage
    wrote it before saying so) instead of asking /view: the same bytes reach S3."""
    folder = output_dir_of(any_comfyui)
    if folder is None:
        pytest.skip("COMFYUI_URL is given without COMFYUI_OUTPUT_DIR: its folder is unknown")
    workers([any_comfyui], models=["cpu-smoke"], comfyui_output_dirs={any_comfyui: folder})
    before = {source: OUTPUTS_READ.labels(source)._value.get() for source in ("folder", "view")}
    job = await publish_job(bus, "cpu-smoke", {"width": 48, "height": 40, "color": 0x123456})
    done = await runs.wait_for(job.job_id, "completed", "failed", timeout=90)
    assert done.kind == "completed", done.error
    [out] = done.outputs
    assert out.filename is not None
    [saved] = [p for p in folder.rglob(out.filename) if p.is_file()]
    stored = await store.get_bytes(out.key)
    assert stored == saved.read_bytes() and out.size == len(stored)
    assert Image.open(io.BytesIO(stored)).convert("RGB").getpixel((5, 5)) == (0x12, 0x34, 0x56)
    read = {s: OUTPUTS_READ.labels(s)._value.get() - n for s, n in before.items()}
    assert read == {"folder": 1, "view": 0}


async def test_cancel_while_running_interrupts_the_prompt(
    bus: Bus, workers: Workers, runs: RunWatch, any_comfyui: str
) -> None:
    workers([any_comfyui], catalogue=catalogue(), models=["slow-blur"])
    job = await publish_job(bus, "slow-blur", {}, record=True, validate=False)
    started = await runs.wait_for(job.job_id, "started", timeout=60)
    await bus.send(bus.names.cancel(job.job_id), CancelCommand(job_id=job.job_id))
    ended = await runs.wait_for(job.job_id, "cancelled", "completed", "failed", timeout=60)
    assert ended.kind == "cancelled", ended
    prompt_id = started.prompt_id
    assert prompt_id is not None and ended.prompt_id == prompt_id
    async with httpx.AsyncClient(timeout=10) as client:
        history: dict[str, Any] = {}
        for _ in range(100):  # the entry lands just after the last frame
            history = (await client.get(f"{any_comfyui}/history/{prompt_id}")).json()
            if history:
                break
            await asyncio.sleep(0.05)
        kinds = [m[0] for m in history[prompt_id]["status"]["messages"]]
        assert "execution_interrupted" in kinds and "execution_success" not in kinds
        assert not history[prompt_id]["outputs"]
    info = await bus.js.consumer_info(
        bus.names.stream("WORK"), bus.names.work_consumer("slow-blur")
    )
    assert (info.num_pending, info.num_ack_pending) == (0, 0), "the message was settled"


async def test_cancel_while_pending_deletes_the_prompt(
    bus: Bus, workers: Workers, runs: RunWatch, any_comfyui: str
) -> None:
    url = any_comfyui
    async with httpx.AsyncClient(timeout=10) as client:
        # another client's prompt keeps the server busy while a worker starts; ours waits
        # behind it (four times the slow model's work: a worker starting on a loaded machine
        # must find it still running)
        blocker = slow_graph("blocker", 0x102030, blurs=4 * BLURS)
        posted = await client.post(f"{url}/prompt", json={"prompt": blocker, "client_id": "x"})
        blocker_id = posted.json()["prompt_id"]
        try:
            workers([url])
            job = await publish_job(
                bus, "cpu-smoke", {"width": 32, "height": 32, "color": 0x0A0B0C}, record=True
            )
            ours = None
            for _ in range(200):
                running, pending = await queue_ids(client, url)
                if pending:
                    (ours,) = pending
                    break
                await asyncio.sleep(0.05)
            assert ours is not None and running == {blocker_id}, "ours waits behind the blocker"
            await bus.send(bus.names.cancel(job.job_id), CancelCommand(job_id=job.job_id))
            ended = await runs.wait_for(job.job_id, "cancelled", "completed", "failed")
            assert ended.kind == "cancelled", ended
            assert not runs.starts(job.job_id)
            running, pending = await queue_ids(client, url)
            assert ours not in running | pending
            await client.post(f"{url}/interrupt")  # the blocker ends now, not in seconds
            for _ in range(300):  # the blocker finishes; ours never ran
                if (await client.get(f"{url}/history/{blocker_id}")).json():
                    break
                await asyncio.sleep(0.1)
            assert (await client.get(f"{url}/history/{ours}")).json() == {}
        finally:
            await idle(client, url)
