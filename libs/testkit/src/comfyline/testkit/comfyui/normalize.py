"""How a recorded transcript and a live run are put in the same terms before comparing:
ids mapped back, timestamps, tracebacks, random temp names, prompt numbers and local paths
replaced by placeholders, binary frames described by their decoded parts."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from comfyline.testkit.comfyui.client import Frame

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TEMP_NAME = re.compile(r"ComfyUI_temp_[a-z]{5}_")


def map_ids(value: Any, mapping: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        return {map_ids(k, mapping): map_ids(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [map_ids(v, mapping) for v in value]
    if isinstance(value, str):
        return UUID.sub(lambda m: mapping(m.group(0)), value)
    return value


def normalize(value: Any, key: str | None = None) -> Any:
    """Replace what legitimately differs between two runs by placeholders."""
    if key == "timestamp" and isinstance(value, int):
        return "<timestamp>"
    if key == "traceback":
        return "<traceback>"
    if key in ("current_outputs", "executed") and isinstance(value, list):
        return sorted(value)
    if key == "number" and isinstance(value, int | float):
        return "<number>"
    if key == "current_inputs" and isinstance(value, dict):
        return {
            k: [
                v if not isinstance(v, str) or not v.startswith(("tensor(", "Sim")) else "<tensor>"
                for v in values
            ]
            for k, values in value.items()
        }
    if key in ("prompt", "queue_item") and isinstance(value, list) and len(value) == 5:
        return ["<number>", *[normalize(v) for v in value[1:]]]
    if key in ("queue_running", "queue_pending") and isinstance(value, list):
        return [normalize(item, "queue_item") for item in value]
    if isinstance(value, dict):
        return {k: normalize(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, str):
        return TEMP_NAME.sub("ComfyUI_temp_<rand>_", value)
    return value


def shape(value: Any) -> Any:
    """Keys and value types only (for answers whose values are machine-specific)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def png_size(data: bytes) -> dict[str, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return {"width": width, "height": height}


def describe_frame(frame: Frame) -> dict[str, Any]:
    """A received frame in the recording's terms (binary frames by their decoded parts)."""
    if not frame.binary:
        return {"type": frame.type, "data": frame.data}
    out: dict[str, Any] = {"binary": True, "event_type": frame.event}
    if frame.event in (1, 4):
        meta, image_format, image = frame.preview()
        if meta is not None:
            out["metadata"] = meta
        if image_format is not None:
            out["image_format"] = image_format
        out["png"] = png_size(image)
    return out


def expected_frame(step: dict[str, Any]) -> dict[str, Any]:
    frame = step["frame"]
    if not frame.get("binary"):
        return dict(frame)
    out = {"binary": True, "event_type": frame["event_type"]}
    for key in ("metadata", "image_format", "png"):
        if key in frame:
            out[key] = frame[key]
    return out


def split_floating(frames: list[Any]) -> tuple[list[Any], list[Any]]:
    """Set aside `status` frames of a prompt queued while another one runs: where they fall
    among the running prompt's frames is a race (in the recordings as much as here), so they
    are compared as their own sequence; every other frame keeps its exact position."""
    strict: list[Any] = []
    floating: list[Any] = []
    previous = 0
    for frame in frames:
        value = None
        if isinstance(frame, dict) and frame.get("type") == "status":
            value = frame["data"]["status"]["exec_info"]["queue_remaining"]
        if value is not None and previous >= 1 and value > previous:
            floating.append(frame)
        else:
            strict.append(frame)
        previous = value if value is not None else previous
    return strict, floating


def subset(actual: Any, expected: Any) -> Any:
    """`actual` restricted to the keys `expected` has (extra keys are allowed)."""
    if isinstance(actual, dict) and isinstance(expected, dict):
        return {k: subset(actual.get(k), v) for k, v in expected.items()}
    return actual


def map_paths(value: Any, input_dir: str) -> Any:
    if isinstance(value, dict):
        return {k: map_paths(v, input_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [map_paths(v, input_dir) for v in value]
    if isinstance(value, str):
        return value.replace(input_dir, "<input_dir>")
    return value


def frame_diff(name: str, got: list[Any], want: list[Any]) -> str:
    lines = [f"socket {name}: {len(got)} frames, recording has {len(want)}"]
    for index in range(max(len(got), len(want))):
        g = got[index] if index < len(got) else None
        w = want[index] if index < len(want) else None
        if g != w:
            lines.append(f"  first difference at frame {index}:\n    got  {g}\n    want {w}")
            break
    return "\n".join(lines)
