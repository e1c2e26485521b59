"""Facts of the WebSocket: greeting, who gets which frame, reconnects, the order of a run,
caching, previews and text frames."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable

from comfyline.testkit.comfyui import (
    ComfyClient,
    Frame,
    empty_image_graph,
    fresh_color,
    is_done,
    of_type,
    slow_graph,
)

EXECUTION = {"execution_start", "execution_cached", "executing", "executed", "execution_success"}


def _status(frame: Frame) -> int | None:
    if frame.type != "status":
        return None
    value: int = frame.data["status"]["exec_info"]["queue_remaining"]
    return value


async def test_status_frame_on_connect_carries_the_sid(comfy: ComfyClient) -> None:
    client_id = str(uuid.uuid4())
    socket = await comfy.connect(client_id)
    assert socket.frames[0] == Frame(
        "status", {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}
    )


async def test_execution_frames_go_only_to_the_matching_client(comfy: ComfyClient) -> None:
    owner, other = await comfy.connect(), await comfy.connect()
    prompt_id, _ = await comfy.run(empty_image_graph(), owner)
    await other.wait_for(lambda f: _status(f) == 0, start=1)
    assert EXECUTION <= set(owner.types(prompt_id))
    assert {f.type for f in other.frames} == {"status"}
    assert [_status(f) for f in other.frames[1:]] == [1, 1, 0]


async def test_a_prompt_without_client_id_gets_no_execution_frames(comfy: ComfyClient) -> None:
    a, b = await comfy.connect(), await comfy.connect()
    prompt_id = await comfy.submit(empty_image_graph("no_client"))
    for socket in (a, b):
        await socket.wait_for(lambda f: _status(f) == 0, start=1)
    for socket in (a, b):
        kinds = {f.type for f in socket.frames}
        assert kinds <= {"status", "progress_state"}, kinds
        assert "progress_state" in kinds
    entry = (await comfy.history(prompt_id))[prompt_id]
    assert entry["status"]["status_str"] == "success"
    assert entry["prompt"][3] == {} or "client_id" not in entry["prompt"][3]


async def test_uncached_run_frame_order(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    prompt_id, frames = await comfy.run(empty_image_graph("order"), socket)
    assert [_status(f) for f in socket.frames if f.type == "status"] == [0, 1, 1, 0]
    kinds = [f.type for f in socket.frames[1:]]
    assert kinds == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing",
        "progress_state",
        "progress_state",
        "executing",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert frames[1].data["nodes"] == []
    assert [f.data["node"] for f in frames if f.type == "executing"] == ["1", "2", None]
    for kind in ("execution_start", "execution_cached", "execution_success"):
        data = next(f for f in frames if f.type == kind).data
        assert isinstance(data["timestamp"], int) and data["prompt_id"] == prompt_id
    executing = next(f for f in frames if f.type == "executing")
    assert executing.data == {"node": "1", "display_node": "1", "prompt_id": prompt_id}
    assert socket.frames[-1].data == {"node": None, "prompt_id": prompt_id}


async def test_progress_state_lists_non_pending_nodes_twice_per_node(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    prompt_id, frames = await comfy.run(empty_image_graph("states"), socket)
    states = [f.data["nodes"] for f in frames if f.type == "progress_state"]
    assert [{k: v["state"] for k, v in s.items()} for s in states] == [
        {"1": "running"},
        {"1": "finished"},
        {"1": "finished", "2": "running"},
        {"1": "finished", "2": "finished"},
    ]
    node = states[0]["1"]
    assert node == {
        "value": 0.0,
        "max": 1.0,
        "state": "running",
        "node_id": "1",
        "prompt_id": prompt_id,
        "display_node_id": "1",
        "parent_node_id": None,
        "real_node_id": "1",
    }


async def test_executed_carries_filename_subfolder_and_type(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    prefix = f"sub_{uuid.uuid4().hex[:6]}/out"
    _, frames = await comfy.run(empty_image_graph(prefix), socket)
    executed = next(f for f in frames if f.type == "executed")
    assert set(executed.data) == {"node", "display_node", "output", "prompt_id"}
    image = executed.data["output"]["images"][0]
    assert image == {
        "filename": "out_00001_.png",
        "subfolder": prefix.split("/")[0],
        "type": "output",
    }
    view = await comfy.get("/view", **image)
    assert view.status == 200


async def test_identical_resubmission_is_cached_with_the_old_filename(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    graph = empty_image_graph(f"cache_{uuid.uuid4().hex[:8]}")
    _, frames = await comfy.run(graph, socket)
    old = next(f for f in frames if f.type == "executed").data["output"]
    second, frames = await comfy.run(graph, socket)
    assert [f.type for f in frames] == [
        "execution_start",
        "execution_cached",
        "executed",
        "progress_state",
        "execution_success",
        "executing",
    ]
    assert sorted(frames[1].data["nodes"]) == ["1", "2"]
    assert frames[2].data["output"] == old
    assert frames[3].data["nodes"]["2"]["value"] == 1
    new_name = old["images"][0]["filename"].replace("00001", "00002")
    assert (await comfy.get("/view", filename=new_name, type="output")).status == 404
    entry = (await comfy.history(second))[second]
    assert entry["outputs"]["2"] == old


async def test_batch_gives_n_images_and_preview_image_gives_temp_files(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    graph = empty_image_graph(f"batch_{uuid.uuid4().hex[:6]}", batch=3)
    graph["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    _, frames = await comfy.run(graph, socket)
    outputs = {f.data["node"]: f.data["output"]["images"] for f in frames if f.type == "executed"}
    assert [i["type"] for i in outputs["2"]] == ["output"] * 3
    assert [i["type"] for i in outputs["3"]] == ["temp"] * 3
    assert all(i["filename"].startswith("ComfyUI_temp_") for i in outputs["3"])
    assert len({i["filename"] for i in outputs["2"]}) == 3
    assert (await comfy.get("/view", **outputs["3"][0])).status == 200


async def test_idle_server_sends_status_one_exactly_twice(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    await comfy.run(empty_image_graph(), socket)
    start = socket.frames.index(next(f for f in socket.frames if f.type == "execution_start"))
    assert [_status(f) for f in socket.frames[1:start]] == [1, 1]


async def test_reconnect_with_the_same_client_id_moves_the_frames(comfy: ComfyClient) -> None:
    old = await comfy.connect()
    prompt_id = await comfy.submit(slow_graph(3), old)
    await old.wait_for(lambda f: f.type == "executing" and f.data.get("node") == "10")
    new = await comfy.connect(old.client_id)
    await new.wait_for(is_done(prompt_id), within=60)
    assert new.frames[0].type == "status"
    assert new.frames[1] == Frame("executing", {"node": "10"})
    assert "execution_success" in new.types(prompt_id)
    assert "execution_success" not in old.types(prompt_id)
    await old.close()


async def test_closing_the_old_socket_later_silences_the_new_one(comfy: ComfyClient) -> None:
    old = await comfy.connect()
    new = await comfy.connect(old.client_id)
    await old.close()
    seen = len(new.frames)
    watcher = await comfy.connect()
    prompt_id = await comfy.submit(empty_image_graph(), new)
    await watcher.wait_for(lambda f: _status(f) == 0, start=1)
    entry = (await comfy.history(prompt_id))[prompt_id]
    assert entry["status"]["status_str"] == "success"
    assert len(new.frames) == seen


async def test_save_image_websocket_sends_progress_and_png_previews(
    comfy: ComfyClient, need: Callable[..., None]
) -> None:
    need("SaveImageWebsocket")
    socket = await comfy.connect()
    graph = empty_image_graph(batch=3, width=48, height=32, saver="SaveImageWebsocket")
    prompt_id, frames = await comfy.run(graph, socket)
    progress = [f.data for f in frames if f.type == "progress"]
    assert progress == [
        {"value": i, "max": 3, "prompt_id": prompt_id, "node": "2"} for i in range(3)
    ]
    previews = [f for f in socket.frames if f.binary]
    assert [f.event for f in previews] == [1, 1, 1]
    _, image_format, png = previews[0].preview()
    assert image_format == 2 and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (48, 32)
    assert "executed" not in [f.type for f in frames]
    assert (await comfy.history(prompt_id))[prompt_id]["outputs"] == {}


async def test_feature_flags_switch_previews_to_type_4_with_metadata(
    comfy: ComfyClient, need: Callable[..., None]
) -> None:
    need("SaveImageWebsocket")
    socket = await comfy.connect(feature_flags=True)
    flags = await socket.wait_for(of_type("feature_flags"))
    assert flags.data["supports_preview_metadata"] is True
    graph = empty_image_graph(batch=2, saver="SaveImageWebsocket")
    prompt_id, _ = await comfy.run(graph, socket)
    previews = [f for f in socket.frames if f.binary]
    assert [f.event for f in previews] == [4, 4]
    meta, _, png = previews[0].preview()
    assert meta is not None and png[:4] == b"\x89PNG"
    assert meta["node_id"] == "2" and meta["prompt_id"] == prompt_id
    assert meta["image_type"] == "image/png"


async def test_text_frames_go_to_every_socket(
    comfy: ComfyClient, need: Callable[..., None]
) -> None:
    need("GetImageSize")
    owner, bystander = await comfy.connect(), await comfy.connect()
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 40, "height": 24, "batch_size": 1, "color": fresh_color()},
        },
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "EmptyImage",
            "inputs": {"width": ["2", 0], "height": 8, "batch_size": 1, "color": 1},
        },
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    await comfy.run(graph, owner)
    for socket in (owner, bystander):
        text = await socket.wait_for(lambda f: f.binary and f.event == 3)
        node, message = text.text_message()
        assert node == "2" and "width: 40, height: 24" in message


async def test_without_client_id_progress_previews_and_interrupts_go_to_every_socket(
    comfy: ComfyClient, need: Callable[..., None]
) -> None:
    need("SaveImageWebsocket")
    a, b = await comfy.connect(), await comfy.connect()
    graph = empty_image_graph(batch=2, saver="SaveImageWebsocket")
    prompt_id = await comfy.submit(graph)
    for socket in (a, b):
        await socket.wait_for(lambda f: _status(f) == 0, start=1)
        assert [f.data["value"] for f in socket.frames if f.type == "progress"] == [0, 1]
        assert [f.event for f in socket.frames if f.binary] == [1, 1]
    slow = await comfy.submit(slow_graph(2))
    await a.wait_for(lambda f: f.type == "progress_state" and "10" in f.data["nodes"], within=60)
    assert (await comfy.request("POST", "/interrupt")).status == 200
    for socket in (a, b):
        stopped = await socket.wait_for(of_type("execution_interrupted", slow), within=60)
        assert stopped.data["node_id"] in ("10", "11", "99")
        assert not {"execution_start", "executing", "execution_success"} & set(
            socket.types(prompt_id)
        )
