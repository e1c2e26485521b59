"""ComfyUI's WebSocket frames, parsed into typed values.

Text frames are JSON ``{"type", "data"}``; binary frames start with a 4-byte big-endian event
type (1 preview image, 3 text, 4 preview with JSON metadata). Parsing is defensive: a field that
is missing or of another type becomes ``None`` (after a reconnect ComfyUI sends ``executing``
with no ``prompt_id``), and anything unknown becomes :class:`Unknown`, never an exception.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Status:
    """``status``: the queue length (broadcast); the first one on connect carries ``sid``."""

    queue_remaining: int | None
    sid: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionStart:
    prompt_id: str | None
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class ExecutionCached:
    """Nodes whose results come from the cache (all of them on an identical resubmission)."""

    prompt_id: str | None
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Executing:
    """A node starts; ``node=None`` with our prompt id is the final "done" marker."""

    prompt_id: str | None
    node: str | None


@dataclass(frozen=True, slots=True)
class ProgressStep:
    """``progress``: step ``value`` of ``max`` inside one node (samplers, TTS...)."""

    prompt_id: str | None
    node: str | None
    value: float
    max: float


@dataclass(frozen=True, slots=True)
class NodeState:
    value: float
    max: float
    state: str


@dataclass(frozen=True, slots=True)
class ProgressState:
    """``progress_state``: every non-pending node of the prompt with its state."""

    prompt_id: str | None
    nodes: dict[str, NodeState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Executed:
    """An output node's UI result: ``{"images": [{filename, subfolder, type}], ...}``."""

    prompt_id: str | None
    node: str | None
    output: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExecutionSuccess:
    prompt_id: str | None
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class ExecutionError:
    """A node raised; ``data`` keeps the whole frame for classification."""

    prompt_id: str | None
    node_id: str | None
    node_type: str | None
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class ExecutionInterrupted:
    prompt_id: str | None
    node_id: str | None
    node_type: str | None
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class Preview:
    """A live preview image (binary event 1, or 4 with metadata naming the prompt)."""

    image: bytes
    content_type: str
    prompt_id: str | None = None
    node_id: str | None = None


@dataclass(frozen=True, slots=True)
class Text:
    """Binary event 3: text a node sends to the UI."""

    node_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """Any other frame (``feature_flags``, ``crystools.monitor``, a new release's additions)."""

    type: str
    data: Any = None


Frame = (
    Status
    | ExecutionStart
    | ExecutionCached
    | Executing
    | ProgressStep
    | ProgressState
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
    | Preview
    | Text
    | Unknown
)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _num(value: Any, default: float = 0.0) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )


def parse_text(raw: str | bytes) -> Frame:
    """One text frame."""
    try:
        message = json.loads(raw)
    except ValueError:
        return Unknown("invalid-json")
    if not isinstance(message, dict):
        return Unknown("not-an-object", message)
    kind = str(message.get("type") or "")
    data = message.get("data")
    if not isinstance(data, dict):
        return Unknown(kind, data)
    return _parse(kind, data)


def _parse(kind: str, d: dict[str, Any]) -> Frame:
    pid = _str(d.get("prompt_id"))
    match kind:
        case "status":
            status = _dict(d.get("status"))
            info = _dict(status.get("exec_info"))
            return Status(_int(info.get("queue_remaining")), _str(d.get("sid")))
        case "execution_start":
            return ExecutionStart(pid, _int(d.get("timestamp")))
        case "execution_cached":
            return ExecutionCached(pid, tuple(str(n) for n in _list(d.get("nodes"))))
        case "executing":
            return Executing(pid, _str(d.get("node")))
        case "progress":
            return ProgressStep(
                pid, _str(d.get("node")), _num(d.get("value")), _num(d.get("max"), 1)
            )
        case "progress_state":
            raw_nodes = _dict(d.get("nodes"))
            states = {
                str(node_id): NodeState(
                    _num(entry.get("value")), _num(entry.get("max"), 1), str(entry.get("state"))
                )
                for node_id, entry in raw_nodes.items()
                if isinstance(entry, dict)
            }
            return ProgressState(pid, states)
        case "executed":
            output = _dict(d.get("output"))
            return Executed(pid, _str(d.get("node")), output)
        case "execution_success":
            return ExecutionSuccess(pid, _int(d.get("timestamp")))
        case "execution_error":
            return ExecutionError(
                pid, _str(d.get("node_id")), _str(d.get("node_type")), d, _int(d.get("timestamp"))
            )
        case "execution_interrupted":
            return ExecutionInterrupted(
                pid, _str(d.get("node_id")), _str(d.get("node_type")), _int(d.get("timestamp"))
            )
    return Unknown(kind, d)


_IMAGE_TYPES = {1: "image/jpeg", 2: "image/png", 3: "image/webp"}


def parse_binary(raw: bytes) -> Frame:
    """One binary frame (previews and text)."""
    if len(raw) < 4:
        return Unknown("binary-short")
    (event,) = struct.unpack(">I", raw[:4])
    body = raw[4:]
    if event == 1 and len(body) >= 4:
        (fmt,) = struct.unpack(">I", body[:4])
        return Preview(body[4:], _IMAGE_TYPES.get(fmt, "image/jpeg"))
    if event == 4 and len(body) >= 4:
        (size,) = struct.unpack(">I", body[:4])
        try:
            meta = json.loads(body[4 : 4 + size])
        except ValueError:
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
        image = body[4 + size :]
        content_type = str(meta.get("image_type") or "image/jpeg")
        return Preview(image, content_type, _str(meta.get("prompt_id")), _str(meta.get("node_id")))
    if event == 3 and len(body) >= 4:
        (size,) = struct.unpack(">I", body[:4])
        node_id = body[4 : 4 + size].decode(errors="replace")
        return Text(node_id, body[4 + size :].decode(errors="replace"))
    return Unknown(f"binary-{event}")


def parse(raw: str | bytes) -> Frame:
    """A frame as the WebSocket library hands it over (``str`` text, ``bytes`` binary)."""
    return parse_text(raw) if isinstance(raw, str) else parse_binary(raw)
