"""The worker against both ComfyUIs in the same run (the ``any_comfyui`` fixture: the simulator
and a real ComfyUI, reached only through their URLs): a cpu-smoke job, cancel while running,
cancel while pending. Model-free stock graphs only, so they run on a CPU-only real server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from comfyline.catalogue import Catalogue
from comfyline.contracts import (
    Binding,
    CancelCommand,
    Deadlines,
    ModelTemplate,
    OutputKind,
    OutputSpec,
)
from comfyline.runtime import Bus, ObjectNotFound, ObjectStore
from comfyline.runtime.metrics import OUTPUTS_READ
from comfyline.testkit.fixtures import output_dir_of, stored

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


def early_graph() -> dict[str, Any]:
    """A quick output (node 2, saved as soon as its image exists) and a slow one (99)."""
    graph = slow_graph("comfyline/late")
    graph["2s"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["1", 0], "filename_prefix": "comfyline/early"},
    }
    return graph


#: Two outputs: the first saved at once, the second after the blurs.
EARLY = SLOW.model_copy(
    update={
        "name": "early-and-late",
        "title": "an early and a late output (tests)",
        "graph": early_graph(),
        # a colour per job: ComfyUI's cache would otherwise answer a run like the one before
        "parameters": {"type": "object", "properties": {"color": {"type": "integer"}}},
        "bindings": [Binding(param="color", node="1", input="color")],
        "outputs": [
            OutputSpec(node="2s", kind=OutputKind.IMAGE),
            OutputSpec(node="99", kind=OutputKind.IMAGE),
        ],
    }
)


def catalogue() -> Catalogue:
    return Catalogue([*Catalogue.builtin(), SLOW, EARLY])


async def first_seen(store: ObjectStore, key: str, until: asyncio.Event) -> float | None:
    """When ``key`` was first in the store (epoch seconds), looked at every 50 ms."""
    while not until.is_set():
        with contextlib.suppress(ObjectNotFound):
            await store.stat(key)
            return time.time()
        await asyncio.sleep(0.05)
    return None


async def test_an_output_is_stored_while_the_rest_of_the_run_goes_on(
    bus: Bus, store: ObjectStore, workers: Workers, runs: RunWatch, any_comfyui: str
) -> None:
    """The first output is in S3 seconds before the run's end (the blurs after it), and the
    job's outputs are both, in the template's order."""
    workers([any_comfyui], catalogue=catalogue(), models=["early-and-late"])
    color = random.randrange(1 << 24)
    job = await publish_job(bus, "early-and-late", {"color": color}, validate=False)
    ended = asyncio.Event()
    seen = asyncio.create_task(first_seen(store, f"{job.output_prefix}0.png", ended))
    done = await runs.wait_for(job.job_id, "completed", "failed", "cancelled", timeout=120)
    ended.set()
    assert done.kind == "completed", done.error
    early, late = done.outputs
    assert (early.index, early.node_id, late.index, late.node_id) == (0, "2s", 1, "99")
    assert early.key == f"{job.output_prefix}0.png" and late.key == f"{job.output_prefix}1.png"
    for out in (early, late):
        data = await stored(store, out.key)
        image = Image.open(io.BytesIO(data)).convert("RGB")
        assert image.size == (1024, 1024) and out.size == len(data)
    assert Image.open(io.BytesIO(await stored(store, early.key))).convert("RGB").getpixel(
        (9, 9)
    ) == (color >> 16, (color >> 8) & 0xFF, color & 0xFF)
    stored_at = await seen
    assert stored_at is not None
    history = await comfy_history(any_comfyui, done.prompt_id)
    stamps = {m[0]: m[1]["timestamp"] / 1000 for m in history["status"]["messages"]}
    # the blurs took a second or more after the early output was saved
    assert stored_at < stamps["execution_success"] - 0.5


async def test_an_output_stored_early_is_deleted_when_the_job_is_cancelled(
    bus: Bus, store: ObjectStore, workers: Workers, runs: RunWatch, any_comfyui: str
) -> None:
    workers([any_comfyui], catalogue=catalogue(), models=["early-and-late"])
    color = random.randrange(1 << 24)
    job = await publish_job(bus, "early-and-late", {"color": color}, record=True, validate=False)
    ended = asyncio.Event()
    key = f"{job.output_prefix}0.png"
    stored_at = await asyncio.wait_for(first_seen(store, key, ended), 60)
    assert stored_at is not None
    await bus.send(bus.names.cancel(job.job_id), CancelCommand(job_id=job.job_id))
    done = await runs.wait_for(job.job_id, "cancelled", "completed", "failed", timeout=60)
    assert done.kind == "cancelled", done
    with pytest.raises(ObjectNotFound):
        await store.stat(key)  # gone before the job said it ended
    assert await asyncio.to_thread(keys_under, store, job.output_prefix) == []


def keys_under(store: ObjectStore, prefix: str) -> list[str]:
    found = store.client.list_objects(store.bucket, prefix=prefix, recursive=True)
    return [o.object_name or "" for o in found]


async def comfy_history(url: str, prompt_id: str | None) -> dict[str, Any]:
    assert prompt_id is not None
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(100):  # the entry lands just after the last frame
            history = (await client.get(f"{url}/history/{prompt_id}")).json()
            if history:
                return dict(history[prompt_id])
            await asyncio.sleep(0.05)
    raise AssertionError(f"no history for {prompt_id}")


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
        # identical: ComfyUI's cache answers its EmptyImage; the save runs into its own folder
        await publish_job(bus, "cpu-smoke", {"width": 64, "height": 32, "color": 0x3366CC}),
    ]
    for job in jobs:
        done = await runs.wait_for(job.job_id, "completed", "failed", timeout=90)
        assert done.kind == "completed", done.error
        [out] = done.outputs
        image = Image.open(io.BytesIO(await stored(store, out.key)))
        assert image.size == (64, 32) and (out.width, out.height) == (64, 32)
        assert image.convert("RGB").getpixel((3, 3)) == (0x33, 0x66, 0xCC)
    server = running.worker.servers[0]
    assert server.healthy and "cpu-smoke" in server.models and server.version


async def test_a_worker_beside_its_comfyui_reads_outputs_from_the_shared_folder(
    bus: Bus, store: ObjectStore, workers: Workers, runs: RunWatch, any_comfyui: str
) -> None:
    """Given the server's output folder, the worker reads a finished job's file there (SaveImage
    wrote it before saying so) instead of asking /view: the same bytes reach S3. (Told to keep
    the run's files, it leaves them where the run saved them: its own folder.)"""
    folder = output_dir_of(any_comfyui)
    if folder is None:
        pytest.skip("COMFYUI_URL is given without COMFYUI_OUTPUT_DIR: its folder is unknown")
    workers(
        [any_comfyui],
        models=["cpu-smoke"],
        comfyui_output_dirs={any_comfyui: folder},
        keep_comfyui_outputs=True,
    )
    before = {source: OUTPUTS_READ.labels(source)._value.get() for source in ("folder", "view")}
    job = await publish_job(bus, "cpu-smoke", {"width": 48, "height": 40, "color": 0x123456})
    done = await runs.wait_for(job.job_id, "completed", "failed", timeout=90)
    assert done.kind == "completed", done.error
    [out] = done.outputs
    assert out.filename is not None
    saved = folder / "comfyline" / f"{job.job_id}-1" / out.filename
    await asyncio.sleep(0.3)  # the worker had its chance to remove it
    assert saved.is_file(), "kept where the run saved it"
    data = await stored(store, out.key)
    assert data == saved.read_bytes() and out.size == len(data)
    assert Image.open(io.BytesIO(data)).convert("RGB").getpixel((5, 5)) == (0x12, 0x34, 0x56)
    read = {s: OUTPUTS_READ.labels(s)._value.get() - n for s, n in before.items()}
    assert read == {"folder": 1, "view": 0}


async def test_each_run_saves_into_its_own_folder_which_goes_once_its_files_are_stored(
    bus: Bus, store: ObjectStore, workers: Workers, runs: RunWatch, any_comfyui: str
) -> None:
    """A save lists the folder it writes to, so the worker points each run's saves into a folder
    of its own (``comfyline/<job id>-<attempt>``, as ComfyUI's own history of the prompt says)
    and, reading the server's output folder, removes that folder once the files are in S3. The
    same job again (ComfyUI's cache holds its nodes) saves anew and has its outputs."""
    folder = output_dir_of(any_comfyui)
    if folder is None:
        pytest.skip("COMFYUI_URL is given without COMFYUI_OUTPUT_DIR: its folder is unknown")
    workers([any_comfyui], models=["cpu-smoke"], comfyui_output_dirs={any_comfyui: folder})
    data = {"width": 40, "height": 24, "color": random.randrange(1 << 24)}
    rgb = tuple(data["color"].to_bytes(3, "big"))
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(2):
            job = await publish_job(bus, "cpu-smoke", data)
            done = await runs.wait_for(job.job_id, "completed", "failed", timeout=90)
            assert done.kind == "completed", done.error
            [out] = done.outputs
            image = Image.open(io.BytesIO(await stored(store, out.key)))
            assert image.convert("RGB").getpixel((2, 2)) == rgb
            history = (await client.get(f"{any_comfyui}/history/{done.prompt_id}")).json()
            [saved] = history[done.prompt_id]["outputs"]["2"]["images"]
            assert (saved["subfolder"], saved["filename"]) == (
                f"comfyline/{job.job_id}-1",
                out.filename,
            )
            run_folder = folder / "comfyline" / f"{job.job_id}-1"
            for _ in range(100):
                if not run_folder.exists():
                    break
                await asyncio.sleep(0.05)
            assert not run_folder.exists(), "removed once stored"


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
