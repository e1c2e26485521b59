"""ComfyUI's refusals and failures mapped to stable codes (bodies as a real ComfyUI sent them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from comfyline.contracts import ErrorCode
from comfyline.worker.errors import execution_failure, is_transient, rejection
from comfyline.worker.replay import Transcript, posted

Load = Callable[[str], Transcript]


def cases(transcript: Load) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """case label -> (graph posted, 400 body) from the validation-errors transcript."""
    found = {}
    for step in transcript("05_validation_errors")["steps"]:
        if step["dir"] != "http" or step["response"]["status"] != 400:
            continue
        body = step["request"].get("json")
        graph = body.get("prompt") if isinstance(body, dict) else None
        label = str(step["request"].get("note", "")).removeprefix("case: ")
        found[label] = (graph if isinstance(graph, dict) else {}, step["response"]["json"])
    return found


@pytest.mark.parametrize(
    ("case", "code", "node_id"),
    [
        ("unknown class_type", ErrorCode.COMFY_MISSING_NODE, "1"),
        ("missing required input (SaveImage.images)", ErrorCode.COMFY_VALIDATION, "3"),
        ("value below min (EmptyImage.width 0)", ErrorCode.COMFY_VALIDATION, "1"),
        ("wrong combo value (ImageScale.upscale_method 'bogus')", ErrorCode.COMFY_VALIDATION, "2"),
        ("LoadImage of a missing file (custom validation)", ErrorCode.COMFY_VALIDATION, "4"),
        ("no output node", ErrorCode.COMFY_VALIDATION, None),
    ],
)
def test_validation_bodies_map_to_codes(
    transcript: Load, case: str, code: ErrorCode, node_id: str | None
) -> None:
    graph, body = cases(transcript)[case]
    error = rejection(body, graph)
    assert error.code == code
    assert error.node_id == node_id
    assert not error.transient


def test_unknown_class_names_the_missing_class(transcript: Load) -> None:
    graph, body = cases(transcript)["unknown class_type"]
    error = rejection(body, graph)
    assert error.node_type == "NoSuchNode"
    assert "does not exist" in error.message


def test_a_model_file_missing_from_a_loader_is_a_missing_model() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed"},
        "node_errors": {
            "4": {
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "ckpt_name: 'nope.safetensors' not in ['a.safetensors']",
                        "extra_info": {
                            "input_name": "ckpt_name",
                            "received_value": "nope.safetensors",
                        },
                    }
                ],
                "class_type": "CheckpointLoaderSimple",
            }
        },
    }
    error = rejection(body, {})
    assert error.code == ErrorCode.COMFY_MISSING_MODEL
    assert (error.node_id, error.node_type) == ("4", "CheckpointLoaderSimple")
    assert "nope.safetensors" in error.message


def test_partial_valid_prompt_on_200_is_still_refused(transcript: Load) -> None:
    recorded = transcript("06_partial_valid")
    answer = next(
        s["response"]["json"]
        for s in recorded["steps"]
        if s["dir"] == "http" and s["request"]["path"] == "/prompt"
    )
    assert answer["node_errors"], "a 200 answer with node_errors"
    error = rejection(answer, posted(recorded)[0]["prompt"])
    assert error.code == ErrorCode.COMFY_VALIDATION and error.node_id == "3"


@pytest.mark.parametrize(
    ("exc_type", "message", "code"),
    [
        (
            "torch.OutOfMemoryError",
            "CUDA out of memory. Tried to allocate 2.00 GiB",
            ErrorCode.COMFY_OUT_OF_MEMORY,
        ),
        (
            "RuntimeError",
            "Allocation on device 0 would exceed allowed memory",
            ErrorCode.COMFY_OUT_OF_MEMORY,
        ),
        ("FileNotFoundError", "No such file: models/sonic/unet.pth", ErrorCode.COMFY_MISSING_MODEL),
        (
            "FileNotFoundError",
            "[Errno 2] No such file or directory: 'input/x.png'",
            ErrorCode.COMFY_EXECUTION_ERROR,
        ),
        ("ValueError", "bad", ErrorCode.COMFY_EXECUTION_ERROR),
    ],
)
def test_execution_errors_map_to_codes(exc_type: str, message: str, code: ErrorCode) -> None:
    error = execution_failure(
        {
            "node_id": "3",
            "node_type": "KSampler",
            "exception_type": exc_type,
            "exception_message": message,
        }
    )
    assert error.code == code
    assert error.job_error().node_type == "KSampler"


def test_only_passing_troubles_are_transient() -> None:
    assert is_transient(ErrorCode.COMFY_UNAVAILABLE)
    assert is_transient(ErrorCode.COMFY_OUT_OF_MEMORY)
    assert is_transient(ErrorCode.COMFY_INTERRUPTED)
    assert not is_transient(ErrorCode.COMFY_VALIDATION)
    assert not is_transient(ErrorCode.COMFY_EXECUTION_ERROR)
