"""Facts of running prompts: errors, interrupts, deleting pending prompts, one prompt at a time,
and the /history race."""

from __future__ import annotations

import uuid
from typing import Any

from comfyline.testkit.comfyui import (
    ComfyClient,
    empty_image_graph,
    fresh_color,
    is_done,
    of_type,
    slow_graph,
)


def _executing(node: str) -> Any:
    return lambda f: f.type == "executing" and f.data.get("node") == node


def error_graph() -> dict[str, Any]:
    """ImageToMask(alpha) on an RGB image raises IndexError at run time, after validation."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": fresh_color()},
        },
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "alpha"}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "err"}},
    }


async def test_runtime_error_sends_execution_error_then_status_and_done(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    prompt_id, frames = await comfy.run(error_graph(), socket)
    kinds = [f.type for f in frames]
    assert "execution_success" not in kinds
    assert kinds[-2:] == ["execution_error", "executing"]
    error = frames[-2].data
    assert set(error) == {
        "prompt_id",
        "node_id",
        "node_type",
        "executed",
        "exception_message",
        "exception_type",
        "traceback",
        "current_inputs",
        "current_outputs",
        "timestamp",
    }
    assert (error["node_id"], error["node_type"]) == ("2", "ImageToMask")
    assert error["executed"] == ["1"]
    assert error["exception_type"] == "IndexError"
    assert isinstance(error["traceback"], list) and all(
        isinstance(t, str) for t in error["traceback"]
    )
    assert error["current_inputs"]["channel"] == ["alpha"]
    assert sorted(error["current_outputs"]) == ["1", "2", "3", "4"]
    after = socket.frames[socket.frames.index(frames[-2]) + 1 :]
    assert [f.type for f in after] == ["status", "executing"]
    assert not any(f.data.get("node") in ("3", "4") for f in frames if f.type == "executing")
    entry = (await comfy.history(prompt_id))[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_error"
    assert entry["outputs"] == {}


async def test_interrupt_stops_at_the_next_node_boundary(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    prompt_id = await comfy.submit(slow_graph(4), socket)
    await socket.wait_for(_executing("11"), within=60)
    reply = await comfy.post("/interrupt", {"prompt_id": prompt_id})
    assert (reply.status, reply.body) == (200, b"")
    await socket.wait_for(is_done(prompt_id), within=60)
    frames = socket.run_frames(prompt_id)
    kinds = [f.type for f in frames]
    cut = kinds.index("execution_interrupted")
    assert kinds[cut - 2 : cut] == ["progress_state", "executing"]
    # The running blur is not cut short: the interrupt is checked as the next node starts (or,
    # when it lands between node 11's `executing` frame and that check, as node 11 starts).
    stopped_at = frames[cut - 1].data["node"]
    assert stopped_at in ("11", "12")
    interrupted = frames[cut].data
    assert set(interrupted) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    assert (interrupted["node_id"], interrupted["node_type"]) == (stopped_at, "ImageBlur")
    ran = ["1", "10", "11"] if stopped_at == "12" else ["1", "10"]
    assert sorted(interrupted["executed"]) == ran
    assert kinds[cut + 1 :] == ["executing"]
    assert "execution_success" not in kinds and "execution_error" not in kinds
    entry = (await comfy.history(prompt_id))[prompt_id]
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"


async def test_interrupt_for_another_prompt_id_is_ignored(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    prompt_id = await comfy.submit(slow_graph(2), socket)
    await socket.wait_for(_executing("10"), within=60)
    reply = await comfy.post("/interrupt", {"prompt_id": str(uuid.uuid4())})
    assert reply.status == 200
    await socket.wait_for(is_done(prompt_id), within=60)
    assert "execution_success" in socket.types(prompt_id)


async def test_interrupt_without_body_stops_whatever_runs(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    running = await comfy.submit(slow_graph(3), socket)
    pending = await comfy.submit(empty_image_graph(), socket)
    await socket.wait_for(_executing("10"), within=60)
    assert (await comfy.request("POST", "/interrupt")).status == 200
    await socket.wait_for(is_done(pending), within=60)
    assert "execution_interrupted" in socket.types(running)
    assert "execution_success" in socket.types(pending)


async def test_interrupt_while_idle_is_lost(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    assert (await comfy.request("POST", "/interrupt")).status == 200
    _, frames = await comfy.run(empty_image_graph(), socket)
    assert "execution_success" in [f.type for f in frames]


async def test_queue_delete_removes_a_pending_prompt_silently(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    running = await comfy.submit(slow_graph(2), socket)
    pending = await comfy.submit(empty_image_graph(), socket)
    queue = await comfy.get_json("/queue")
    assert [item[1] for item in queue["queue_running"]] == [running]
    assert [item[1] for item in queue["queue_pending"]] == [pending]
    item = queue["queue_pending"][0]
    assert len(item) == 5 and item[3] == {"client_id": socket.client_id} | item[3]
    assert item[4] == ["2"]
    reply = await comfy.post("/queue", {"delete": [pending]})
    assert (reply.status, reply.content_type, reply.body) == (200, None, b"")
    assert (await comfy.get_json("/queue"))["queue_pending"] == []
    await socket.wait_for(is_done(running), within=60)
    assert socket.run_frames(pending) == []
    assert await comfy.history(pending) == {}


async def test_get_queue_lists_running_and_pending_items(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    graph = slow_graph(1)
    running = await comfy.submit(graph, socket)
    pending = await comfy.submit(empty_image_graph(), socket)
    await socket.wait_for(of_type("execution_start", running))
    queue = await comfy.get_json("/queue")
    assert set(queue) == {"queue_running", "queue_pending"}
    number, prompt_id, posted, extra, outputs = queue["queue_running"][0]
    assert (prompt_id, posted, outputs) == (running, graph, ["99"])
    assert isinstance(number, int | float) and extra["client_id"] == socket.client_id
    assert [item[1] for item in queue["queue_pending"]] == [pending]
    await socket.wait_for(is_done(pending), within=60)
    assert await comfy.get_json("/queue") == {"queue_running": [], "queue_pending": []}


async def test_queue_delete_of_the_running_prompt_does_nothing(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    running = await comfy.submit(slow_graph(1), socket)
    await socket.wait_for(of_type("execution_start", running))
    assert (await comfy.post("/queue", {"delete": [running]})).status == 200
    await socket.wait_for(is_done(running), within=60)
    assert "execution_success" in socket.types(running)


async def test_one_prompt_runs_at_a_time(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    first = await comfy.submit(slow_graph(1), socket)
    second = await comfy.submit(empty_image_graph(), socket)
    status = await comfy.get_json("/prompt")
    assert status["exec_info"]["queue_remaining"] == 2
    await socket.wait_for(is_done(second), within=60)
    order = [
        (f.type, f.prompt_id)
        for f in socket.frames
        if f.type in ("execution_start", "executing")
        and (f.type == "execution_start" or f.data.get("node") is None)
    ]
    assert order == [
        ("execution_start", first),
        ("executing", first),
        ("execution_start", second),
        ("executing", second),
    ]


async def test_history_is_written_after_execution_success(comfy: ComfyClient) -> None:
    """Either `{}` or the entry may come back on `execution_success` (the race); at the final
    `executing {node: null}` the entry is always there, and `status` precedes that marker."""
    socket = await comfy.connect()
    for _ in range(5):
        start = len(socket.frames)
        prompt_id = await comfy.submit(empty_image_graph(), socket)
        await socket.wait_for(of_type("execution_success", prompt_id), start=start)
        early = await comfy.history(prompt_id)
        assert early in ({}, {prompt_id: early.get(prompt_id)})
        await socket.wait_for(is_done(prompt_id), start=start)
        assert prompt_id in await comfy.history(prompt_id)
        tail = [f.type for f in socket.frames[start:]][-3:]
        assert tail == ["execution_success", "status", "executing"]


async def test_history_entry_shape(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    graph = empty_image_graph("entry")
    prompt_id, _ = await comfy.run(graph, socket)
    entry = (await comfy.history(prompt_id))[prompt_id]
    assert set(entry) == {"prompt", "outputs", "status", "meta"}
    number, pid, posted, extra, outputs = entry["prompt"]
    assert (pid, posted, outputs) == (prompt_id, graph, ["2"])
    assert isinstance(number, int | float) and extra["client_id"] == socket.client_id
    assert entry["outputs"]["2"]["images"][0]["type"] == "output"
    status = entry["status"]
    assert (status["status_str"], status["completed"]) == ("success", True)
    assert [m[0] for m in status["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert entry["meta"]["2"] == {
        "node_id": "2",
        "display_node": "2",
        "parent_node": None,
        "real_node_id": "2",
    }


async def test_an_image_larger_than_memory_fails_at_once(comfy: ComfyClient) -> None:
    graph = empty_image_graph("huge", 16384, 16384, batch=4096)
    socket = await comfy.connect()
    _, frames = await comfy.run(graph, socket, within=60)
    error = next(f.data for f in frames if f.type == "execution_error")
    assert (error["node_type"], error["exception_type"]) == ("EmptyImage", "RuntimeError")
    assert "can't allocate memory" in error["exception_message"]
    assert not [f for f in frames if f.type == "executed"]


async def test_preview_any_shows_a_linked_value_as_text(comfy: ComfyClient) -> None:
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 24, "height": 16, "batch_size": 1, "color": fresh_color()},
        },
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    frames = await comfy.run_ok(graph)
    [shown] = [f.data for f in frames if f.type == "executed"]
    assert (shown["node"], shown["output"]) == ("3", {"text": ["24"]})
    info = (await comfy.get_json("/object_info/PreviewAny"))["PreviewAny"]
    assert info["input"]["required"]["source"][0] == "*"
    assert (info["output"], info["output_node"], info["category"]) == ([], True, "utils")
