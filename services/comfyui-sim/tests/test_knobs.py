"""The knobs for tests and benchmarks: step time, node delay, model load time, history delay,
installed models,
disabled node classes, fault injection (raise, dropped WebSocket, slow /view), big PNGs,
sampler previews."""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable

import pytest

from comfyline.testkit.comfyui import (
    ComfyClient,
    empty_image_graph,
    is_done,
    of_type,
    outputs_of,
    txt2img_graph,
)

MakeSim = Callable[..., Awaitable[ComfyClient]]


async def test_step_time_paces_each_sampler_step(make_sim: MakeSim) -> None:
    sim = await make_sim(step_time=0.05)
    socket = await sim.connect()
    started = time.monotonic()
    _, frames = await sim.run(txt2img_graph(steps=6), socket)
    assert time.monotonic() - started >= 0.3
    assert [f.data["value"] for f in frames if f.type == "progress"] == [1, 2, 3, 4, 5, 6]


async def test_node_delay_slows_one_class(make_sim: MakeSim) -> None:
    sim = await make_sim(node_delays={"SaveImage": 0.3})
    socket = await sim.connect()
    started = time.monotonic()
    await sim.run(empty_image_graph(), socket)
    assert time.monotonic() - started >= 0.3


async def test_model_load_time_is_paid_only_when_the_checkpoint_changes(make_sim: MakeSim) -> None:
    sim = await make_sim(model_load_time=0.4)
    socket = await sim.connect()
    xl, lightning = "sd_xl_base_1.0.safetensors", "sdxl_lightning_4step.safetensors"
    took = []
    for seed, ckpt in [(1, xl), (2, xl), (3, lightning), (4, xl)]:
        started = time.monotonic()
        await sim.run(txt2img_graph(seed=seed, ckpt=ckpt), socket)
        took.append(time.monotonic() - started)
    assert took[0] >= 0.4 and took[2] >= 0.4 and took[3] >= 0.4  # first load, then two swaps
    assert took[1] < took[0]  # the same checkpoint again: already loaded


async def test_history_delay_makes_history_empty_on_execution_success(make_sim: MakeSim) -> None:
    sim = await make_sim(history_delay=0.5)
    socket = await sim.connect()
    prompt_id = await sim.submit(empty_image_graph(), socket)
    await socket.wait_for(of_type("execution_success", prompt_id))
    assert await sim.history(prompt_id) == {}
    await socket.wait_for(is_done(prompt_id))
    assert prompt_id in await sim.history(prompt_id)


async def test_configured_models_fill_the_combos_and_others_are_refused(make_sim: MakeSim) -> None:
    sim = await make_sim(models={"checkpoints": ("only_this.safetensors",)})
    info = await sim.get_json("/object_info/CheckpointLoaderSimple")
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
        "only_this.safetensors"
    ]
    assert await sim.get_json("/models/checkpoints") == ["only_this.safetensors"]
    reply = await sim.prompt(txt2img_graph())
    error = reply.json()["node_errors"]["4"]["errors"][0]
    assert (reply.status, error["type"]) == (400, "value_not_in_list")
    assert error["extra_info"]["input_config"] == [
        ["only_this.safetensors"],
        {"tooltip": "The name of the checkpoint (model) to load."},
    ]
    ok = await sim.prompt(txt2img_graph(ckpt="only_this.safetensors"))
    assert ok.status == 200


async def test_a_disabled_node_class_is_missing_everywhere(make_sim: MakeSim) -> None:
    sim = await make_sim(disabled_nodes=frozenset({"VHS_VideoCombine", "SaveImageWebsocket"}))
    info = await sim.get_json("/object_info")
    assert "VHS_VideoCombine" not in info and "SaveImage" in info
    assert await sim.get_json("/object_info/VHS_VideoCombine") == {}
    reply = await sim.prompt(empty_image_graph(saver="SaveImageWebsocket"))
    assert reply.status == 400
    assert reply.json()["error"]["message"] == (
        "Cannot execute because node SaveImageWebsocket does not exist."
    )


async def test_fail_node_raises_an_execution_error(make_sim: MakeSim) -> None:
    sim = await make_sim(fail_nodes=frozenset({"KSampler"}))
    socket = await sim.connect()
    prompt_id, frames = await sim.run(txt2img_graph(), socket)
    error = next(f for f in frames if f.type == "execution_error").data
    assert (error["node_id"], error["node_type"]) == ("3", "KSampler")
    assert error["exception_type"] == "RuntimeError"
    assert "fault" in error["exception_message"] or "--fail-node" in error["exception_message"]
    assert (await sim.history(prompt_id))[prompt_id]["status"]["status_str"] == "error"


async def test_drop_ws_aborts_every_socket_but_the_run_completes(make_sim: MakeSim) -> None:
    sim = await make_sim(drop_ws_nodes=frozenset({"SaveImage"}))
    socket = await sim.connect()
    prompt_id = await sim.submit(empty_image_graph(), socket)
    await socket.closed.wait()
    assert "execution_success" not in socket.types(prompt_id)
    await sim.wait_idle()
    entry = await sim.history(prompt_id)
    assert entry[prompt_id]["status"]["status_str"] == "success"


async def test_view_delay_slows_every_download(make_sim: MakeSim) -> None:
    sim = await make_sim(view_delay=0.3)
    socket = await sim.connect()
    _, frames = await sim.run(empty_image_graph(), socket)
    image = outputs_of(frames)["2"]["images"][0]
    started = time.monotonic()
    assert (await sim.get("/view", **image)).status == 200
    assert time.monotonic() - started >= 0.3


async def test_png_compress_level_zero_makes_big_files_that_view_streams(
    make_sim: MakeSim,
) -> None:
    sim = await make_sim(png_compress_level=0)
    socket = await sim.connect()
    _, frames = await sim.run(empty_image_graph(width=2048, height=2048), socket, within=60)
    image = outputs_of(frames)["2"]["images"][0]
    reply = await sim.get("/view", **image)
    raw = 2048 * (2048 * 3 + 1)
    assert raw < len(reply.body) < raw * 1.01
    assert int(reply.headers["Content-Length"]) == len(reply.body)


@pytest.mark.slow
async def test_an_8192_square_png_is_about_200_mb(make_sim: MakeSim) -> None:
    sim = await make_sim(png_compress_level=0)
    socket = await sim.connect()
    _, frames = await sim.run(empty_image_graph(width=8192, height=8192), socket, within=120)
    image = outputs_of(frames)["2"]["images"][0]
    size = 0
    async with sim.session.get(f"{sim.url}/view", params=image) as answer:
        async for chunk in answer.content.iter_chunked(1 << 20):
            size += len(chunk)
    assert 200_000_000 < size < 203_000_000


async def test_preview_method_auto_sends_jpeg_previews_per_step(make_sim: MakeSim) -> None:
    sim = await make_sim(preview_method="auto")
    socket = await sim.connect()
    await sim.run(txt2img_graph(steps=3), socket)
    previews = [f for f in socket.frames if f.binary]
    assert len(previews) == 3
    _, image_format, jpeg = previews[0].preview()
    assert image_format == 1 and jpeg[:2] == b"\xff\xd8"


async def test_interrupt_lands_on_a_progress_tick_inside_a_sampler(make_sim: MakeSim) -> None:
    sim = await make_sim(step_time=0.05)
    socket = await sim.connect()
    prompt_id = await sim.submit(txt2img_graph(steps=40), socket)
    await socket.wait_for(lambda f: f.type == "progress" and f.data["value"] == 2)
    await sim.post("/interrupt", {"prompt_id": prompt_id})
    await socket.wait_for(is_done(prompt_id))
    frames = socket.run_frames(prompt_id)
    stopped = next(f for f in frames if f.type == "execution_interrupted").data
    assert stopped["node_id"] == "3" and "3" not in stopped["executed"]
    assert max(f.data["value"] for f in frames if f.type == "progress") < 40


async def test_simulator_names_itself_in_system_stats(sim: ComfyClient) -> None:
    stats = await sim.get_json("/system_stats")
    assert stats["system"]["comfyui_version"] == "0.3.64"
    assert stats["system"]["simulator"]["name"] == "Comfyline ComfyUI simulator"
    assert "simulator" in stats["system"]["pytorch_version"].lower()
    assert "simulator" in stats["devices"][0]["name"].lower()
    root = await sim.get("/")
    assert "not ComfyUI" in root.text


async def test_sim_executions_logs_when_each_prompt_ran(make_sim: MakeSim) -> None:
    """The simulator-only execution log: one entry per prompt in the order they ran, each one's
    node work inside [started, ended], queued before it started (the three were queued at
    once, so the later ones long before they ran), the next one starting only after the
    previous was done; ComfyUI has no such route, so it is not under /api."""
    sim = await make_sim(node_delays={"EmptyImage": 0.05})
    socket = await sim.connect()
    ids = [await sim.submit(empty_image_graph(color=n), socket) for n in range(3)]
    for prompt_id in ids:
        await socket.wait_for(is_done(prompt_id))
    runs = (await sim.get_json("/sim/executions"))["executions"]
    assert [run["prompt_id"] for run in runs] == ids
    for run in runs:
        assert run["success"] is True
        assert run["ended"] - run["started"] >= 0.05
        assert run["done"] >= run["ended"]
        assert run["queued"] <= run["started"]
    for before, after in itertools.pairwise(runs):
        assert after["started"] >= before["done"]
        assert after["queued"] < before["ended"]  # waiting in the queue while the other ran
    assert (await sim.get("/api/sim/executions")).status == 404
