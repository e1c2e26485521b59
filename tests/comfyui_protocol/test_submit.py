"""Facts of `POST /prompt`: the answer, client-chosen ids, partial validity, validation errors."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from comfyline.testkit.comfyui import (
    ComfyClient,
    empty_image_graph,
    fresh_color,
    is_done,
    of_type,
    slow_graph,
)

ERROR_KEYS = {"type", "message", "details", "extra_info"}


def base_graph() -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": fresh_color()},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "val"}},
    }


def _case(name: str) -> tuple[dict[str, Any], str]:
    """A broken graph and the node id that should carry the error."""
    graph = base_graph()
    if name == "required_input_missing":
        del graph["3"]["inputs"]["images"]
        return graph, "3"
    if name == "value_smaller_than_min":
        graph["1"]["inputs"]["width"] = 0
        return graph, "1"
    if name == "value_bigger_than_max":
        graph["1"]["inputs"]["width"] = 99999
        return graph, "1"
    if name == "invalid_input_type":
        graph["1"]["inputs"]["width"] = "abc"
        return graph, "1"
    if name == "value_not_in_list":
        graph["2"] = {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["1", 0],
                "upscale_method": "bogus",
                "width": 8,
                "height": 8,
                "crop": "disabled",
            },
        }
        return graph, "2"
    if name == "return_type_mismatch":
        graph["2"] = {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}}
        return graph, "3"
    if name == "custom_validation_failed":
        graph["4"] = {"class_type": "LoadImage", "inputs": {"image": f"nope_{uuid.uuid4()}.png"}}
        graph["3"]["inputs"]["images"] = ["4", 0]
        return graph, "4"
    if name == "exception_during_validation":
        graph["3"]["inputs"]["images"] = ["77", 0]
        return graph, "3"
    if name == "exception_during_inner_validation":
        graph["2"]["inputs"]["image"] = ["77", 0]
        return graph, "2"
    if name == "bad_linked_input":
        graph["2"]["inputs"]["image"] = ["1", 0, 5]
        return graph, "2"
    raise AssertionError(name)


async def test_post_prompt_answers_prompt_id_number_and_node_errors(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    reply = await comfy.prompt(empty_image_graph(), socket.client_id)
    assert (reply.status, reply.content_type) == (200, "application/json; charset=utf-8")
    answer = reply.json()
    assert set(answer) == {"prompt_id", "number", "node_errors"}
    assert answer["node_errors"] == {}
    assert str(uuid.UUID(answer["prompt_id"])) == answer["prompt_id"]
    await socket.wait_for(is_done(answer["prompt_id"]))
    second = (await comfy.prompt(empty_image_graph(), socket.client_id)).json()
    assert second["number"] > answer["number"]
    await socket.wait_for(is_done(second["prompt_id"]))


async def test_client_chosen_prompt_id_is_used_as_given(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    chosen = str(uuid.uuid4())
    reply = await comfy.prompt(empty_image_graph(), socket.client_id, chosen)
    assert reply.json()["prompt_id"] == chosen
    await socket.wait_for(is_done(chosen))
    assert {f.prompt_id for f in socket.run_frames(chosen)} == {chosen}
    assert list(await comfy.history(chosen)) == [chosen]


async def test_only_valid_outputs_run_and_node_errors_come_on_a_200(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    graph = empty_image_graph("partial_ok")
    graph["3"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
    }
    graph["4"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["3", 0], "filename_prefix": "partial_bad"},
    }
    prompt_id = str(uuid.uuid4())
    reply = await comfy.prompt(graph, socket.client_id, prompt_id)
    assert reply.status == 200
    node_errors = reply.json()["node_errors"]
    assert list(node_errors) == ["3"]
    assert node_errors["3"]["dependent_outputs"] == ["4"]
    assert node_errors["3"]["errors"][0]["type"] == "value_smaller_than_min"
    await socket.wait_for(is_done(prompt_id))
    executed = [f.data["node"] for f in socket.run_frames(prompt_id) if f.type == "executed"]
    assert executed == ["2"]
    entry = (await comfy.history(prompt_id))[prompt_id]
    assert entry["prompt"][4] == ["2"]
    assert list(entry["outputs"]) == ["2"]


@pytest.mark.parametrize(
    "error_type",
    [
        "required_input_missing",
        "value_smaller_than_min",
        "value_bigger_than_max",
        "invalid_input_type",
        "value_not_in_list",
        "return_type_mismatch",
        "custom_validation_failed",
        "exception_during_validation",
        "exception_during_inner_validation",
        "bad_linked_input",
    ],
)
async def test_validation_failure_is_400_with_node_errors(
    comfy: ComfyClient, error_type: str
) -> None:
    graph, node = _case(error_type)
    reply = await comfy.prompt(graph, "validation-client")
    assert (reply.status, reply.content_type) == (400, "application/json; charset=utf-8")
    body = reply.json()
    assert set(body) == {"error", "node_errors"}
    assert set(body["error"]) == ERROR_KEYS
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["error"]["message"] == "Prompt outputs failed validation"
    assert list(body["node_errors"]) == [node]
    entry = body["node_errors"][node]
    assert set(entry) == {"errors", "dependent_outputs", "class_type"}
    assert entry["class_type"] == graph[node]["class_type"]
    assert entry["dependent_outputs"] == ["3"]
    error = entry["errors"][0]
    assert set(error) == ERROR_KEYS
    assert error["type"] == error_type


async def test_validation_error_details_match_the_real_server(comfy: ComfyClient) -> None:
    graph, _ = _case("value_not_in_list")
    error = (await comfy.prompt(graph)).json()["node_errors"]["2"]["errors"][0]
    assert error["details"] == (
        "upscale_method: 'bogus' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']"
    )
    assert error["extra_info"] == {
        "input_name": "upscale_method",
        "input_config": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {}],
        "received_value": "bogus",
    }
    graph, _ = _case("invalid_input_type")
    error = (await comfy.prompt(graph)).json()["node_errors"]["1"]["errors"][0]
    assert error["message"] == "Failed to convert an input value to a INT value"
    assert (
        error["extra_info"]["exception_message"] == "invalid literal for int() with base 10: 'abc'"
    )
    graph, _ = _case("required_input_missing")
    assert (await comfy.prompt(graph)).json()["error"]["details"] == (
        "Required input is missing: images"
    )


async def test_unknown_class_type_is_refused_with_empty_node_errors(comfy: ComfyClient) -> None:
    graph = base_graph()
    graph["1"]["class_type"] = "NoSuchNode"
    body = (await comfy.prompt(graph)).json()
    assert body["node_errors"] == {}
    assert set(body["error"]) == ERROR_KEYS
    assert body["error"]["details"] == "Node ID '#1'"
    assert body["error"]["type"] in ("invalid_prompt", "missing_node_type")
    if body["error"]["type"] == "invalid_prompt":
        assert body["error"]["message"] == "Cannot execute because node NoSuchNode does not exist."
    del graph["1"]["class_type"]
    body = (await comfy.prompt(graph)).json()
    assert body["error"]["type"] in ("invalid_prompt", "missing_node_type")


async def test_no_output_node_is_prompt_no_outputs(comfy: ComfyClient) -> None:
    prompts: list[Any] = [{"1": base_graph()["1"]}, {}, []]
    for prompt in prompts:
        reply = await comfy.post("/prompt", {"prompt": prompt})
        assert reply.status == 400
        assert reply.json()["error"]["type"] == "prompt_no_outputs"


async def test_body_without_prompt_is_no_prompt(comfy: ComfyClient) -> None:
    for body in ({"client_id": "x"}, [1, 2], "hello"):
        reply = await comfy.post("/prompt", body)
        assert reply.status == 400
        assert reply.json() == {
            "error": {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            },
            "node_errors": {},
        }


async def test_malformed_json_is_a_plain_text_500(comfy: ComfyClient) -> None:
    for body in (b"{not json", b""):
        reply = await comfy.request(
            "POST", "/prompt", data=body, headers={"Content-Type": "application/json"}
        )
        assert (reply.status, reply.content_type) == (500, "text/plain; charset=utf-8")
        assert reply.text.startswith("500 Internal Server Error")


async def test_refused_prompts_send_no_websocket_frames(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    for name in ("required_input_missing", "bad_linked_input", "exception_during_validation"):
        graph, _ = _case(name)
        assert (await comfy.prompt(graph, socket.client_id)).status == 400
    greeting = len(socket.frames)
    prompt_id = await comfy.submit(empty_image_graph(), socket)
    await socket.wait_for(is_done(prompt_id))
    assert socket.frames[greeting].type == "status"
    assert socket.frames[greeting].data["status"]["exec_info"]["queue_remaining"] == 1


async def test_invalid_prompt_id_is_refused_by_newer_releases(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    reply = await comfy.prompt(empty_image_graph(), socket.client_id, "not-a-uuid")
    if reply.status == 200:
        await socket.wait_for(is_done("not-a-uuid"))
        pytest.skip("this server takes any string as prompt_id (ComfyUI 0.3.64)")
    assert reply.status == 400
    assert reply.json()["error"]["type"] == "invalid_prompt_id"


async def test_any_prompt_id_string_is_taken_and_a_duplicate_runs_again(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    odd = f"my-own-id-{uuid.uuid4().hex}"
    first = await comfy.prompt(empty_image_graph(), socket.client_id, odd)
    if first.status == 400:
        pytest.skip("this server refuses non-UUID prompt ids (newer than ComfyUI 0.3.64)")
    assert first.json()["prompt_id"] == odd
    await socket.wait_for(is_done(odd))
    graph = empty_image_graph("dup_second")
    second = await comfy.prompt(graph, socket.client_id, odd)
    assert second.status == 200
    start = len(socket.frames)
    await socket.wait_for(is_done(odd), start=start)
    entry = (await comfy.history(odd))[odd]
    assert entry["prompt"][2] == graph


async def test_front_makes_number_negative_and_runs_newest_first(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    blocker = await comfy.submit(slow_graph(1), socket)
    await socket.wait_for(of_type("execution_start", blocker))
    older = (await comfy.prompt(empty_image_graph(), socket.client_id, front=True)).json()
    newer = (await comfy.prompt(empty_image_graph(), socket.client_id, front=True)).json()
    assert older["number"] < 0 and newer["number"] < older["number"]
    await socket.wait_for(is_done(older["prompt_id"]), within=60)
    starts = [f.prompt_id for f in socket.frames if f.type == "execution_start"]
    assert starts[-2:] == [newer["prompt_id"], older["prompt_id"]]
