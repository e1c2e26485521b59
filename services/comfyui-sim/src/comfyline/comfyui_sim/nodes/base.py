"""What a simulated node class is: its input spec (as `/object_info` shows it), its outputs, and
a `run` that makes real files from its inputs.

Input specs are built as the JSON ComfyUI serves: `["INT", {"default": 512, ...}]`, a classic combo
`[[options], {...}]` or `[[options]]`, or a newer-style combo `["COMBO", {"options": [...]}]`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from comfyline.comfyui_sim.config import SimConfig
from comfyline.comfyui_sim.paths import DataDirs

Spec = list[Any]
InputTypes = dict[str, dict[str, Any]]
T = TypeVar("T")

MAX_RESOLUTION = 16384
SEED_MAX = 0xFFFFFFFFFFFFFFFF


class InterruptProcessingError(Exception):
    """Raised at a node boundary or progress tick after `/interrupt`; becomes
    `execution_interrupted`, never `execution_error`."""


def _opts(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def INT(
    default: int,
    min: int | None = None,
    max: int | None = None,
    step: int | None = None,
    **extra: Any,
) -> Spec:
    return ["INT", _opts({"default": default, "min": min, "max": max, "step": step, **extra})]


def FLOAT(
    default: float,
    min: float | None = None,
    max: float | None = None,
    step: float | None = None,
    **extra: Any,
) -> Spec:
    return ["FLOAT", _opts({"default": default, "min": min, "max": max, "step": step, **extra})]


def STRING(default: str | None = None, multiline: bool | None = None, **extra: Any) -> Spec:
    return ["STRING", _opts({"default": default, "multiline": multiline, **extra})]


def BOOLEAN(default: bool, **extra: Any) -> Spec:
    return ["BOOLEAN", _opts({"default": default, **extra})]


def LINK(type_name: str, **extra: Any) -> Spec:
    """An input fed by another node's output: `["IMAGE"]` or `["IMAGE", {"tooltip": ...}]`."""
    return [type_name, extra] if extra else [type_name]


def COMBO(options: list[str], **extra: Any) -> Spec:
    """A classic combo: `[[options]]` or `[[options], {...}]`."""
    return [list(options), extra] if extra else [list(options)]


def COMBO_V3(options: list[str], **extra: Any) -> Spec:
    """A newer-style (V3 node) combo: `["COMBO", {"options": [...], ...}]`."""
    return ["COMBO", {"options": list(options), **extra}]


@dataclass(frozen=True)
class NodeEnv:
    """What combos and validation depend on: installed models and the input folder."""

    config: SimConfig
    dirs: DataDirs

    def models(self, folder: str) -> list[str]:
        return sorted(self.config.models.get(folder, ()))


@dataclass(frozen=True)
class Preview:
    """A preview image for a binary frame: `"PNG"` or `"JPEG"` and the encoded bytes."""

    fmt: str
    data: bytes

    @property
    def mime(self) -> str:
        return "image/png" if self.fmt == "PNG" else "image/jpeg"


@dataclass
class NodeOutput:
    """A node's result: values for its outputs, and the `ui` dict a save node reports."""

    values: tuple[Any, ...] = ()
    ui: dict[str, list[Any]] | None = None


@dataclass
class RunContext:
    """Everything a running node may touch; the callbacks are wired by the executor."""

    node_id: str
    prompt_id: str
    signature: str
    config: SimConfig
    dirs: DataDirs
    prompt: dict[str, Any]
    extra_pnginfo: Any
    tick: Callable[[int, int, Preview | None], None]
    send_text: Callable[[str], None]
    pause: Callable[[float], object] = time.sleep
    state: dict[str, Any] = field(default_factory=dict)

    def steps(
        self,
        total: int,
        preview: Callable[[int], Preview | None] | None = None,
        start: int = 1,
    ) -> None:
        """Walk `total` sampler steps: sleep `--step-time`, then report progress `start..total`."""
        for value in range(start, total + 1):
            if self.config.step_time > 0:
                self.pause(self.config.step_time)
            image = preview(value) if preview is not None and self.previews_on else None
            self.tick(value, total, image)

    @property
    def previews_on(self) -> bool:
        return self.config.preview_method != "none"


class Inputs:
    """Typed access to a node's resolved inputs (literal values and upstream outputs)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __contains__(self, name: str) -> bool:
        return self._values.get(name) is not None

    def raw(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def as_int(self, name: str, default: int | None = None) -> int:
        value = self._values.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"input {name!r} should be an INT, got {value!r}")
        return int(value)

    def as_float(self, name: str, default: float | None = None) -> float:
        value = self._values.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"input {name!r} should be a FLOAT, got {value!r}")
        return float(value)

    def as_str(self, name: str, default: str | None = None) -> str:
        value = self._values.get(name, default)
        if not isinstance(value, str):
            raise TypeError(f"input {name!r} should be a STRING, got {value!r}")
        return value

    def as_bool(self, name: str, default: bool | None = None) -> bool:
        value = self._values.get(name, default)
        if not isinstance(value, bool):
            raise TypeError(f"input {name!r} should be a BOOLEAN, got {value!r}")
        return value

    def get(self, name: str, kind: type[T]) -> T:
        value = self._values.get(name)
        if not isinstance(value, kind):
            raise TypeError(f"input {name!r} should be {kind.__name__}, got {type(value).__name__}")
        return value

    def optional(self, name: str, kind: type[T]) -> T | None:
        value = self._values.get(name)
        return value if isinstance(value, kind) else None


class Node:
    """Base of every simulated node class; the class attributes mirror ComfyUI's node API."""

    CLASS: ClassVar[str]
    DISPLAY: ClassVar[str | None] = None
    CATEGORY: ClassVar[str] = "sd"
    DESCRIPTION: ClassVar[str] = ""
    MODULE: ClassVar[str] = "nodes"
    RETURN_TYPES: ClassVar[tuple[str, ...]] = ()
    RETURN_NAMES: ClassVar[tuple[str, ...] | None] = None
    OUTPUT_TOOLTIPS: ClassVar[tuple[str, ...] | None] = None
    OUTPUT_NODE: ClassVar[bool] = False
    #: Marked `"experimental": true` in `/object_info`, as ComfyUI does for such nodes.
    EXPERIMENTAL: ClassVar[bool] = False
    #: A newer-style (V3 schema) node: `/object_info` shows links as `["IMAGE", {}]`, combos
    #: and strings with `multiselect`/`multiline` false, hidden inputs as lists, no display name
    #: unless one is set, and the `deprecated`, `experimental`, `api_node` flags.
    V3: ClassVar[bool] = False
    #: Inputs handed to `validate` (ComfyUI's VALIDATE_INPUTS arguments); their combo lists
    #: and min/max are then not checked by the generic validation.
    VALIDATES: ClassVar[tuple[str, ...]] = ()
    #: Inputs that are not in the spec are passed through (VHS's per-format widgets).
    ACCEPTS_EXTRA_INPUTS: ClassVar[bool] = False

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        raise NotImplementedError

    @classmethod
    def validate(cls, env: NodeEnv, values: dict[str, Any]) -> bool | str:
        """VALIDATE_INPUTS: True, or a message for `custom_validation_failed`."""
        return True

    @classmethod
    def is_changed(cls, env: NodeEnv, inputs: dict[str, Any]) -> object:
        """IS_CHANGED: a value mixed into the cache key (a file hash, or `time.time()`)."""
        return None

    @classmethod
    def info(cls, env: NodeEnv) -> dict[str, Any]:
        """The node's `/object_info` entry, keys in ComfyUI's order."""
        types = cls.input_types(env)
        out: dict[str, Any] = {
            "input": types,
            "input_order": {key: list(value.keys()) for key, value in types.items()},
            "output": list(cls.RETURN_TYPES),
            "output_is_list": [False] * len(cls.RETURN_TYPES),
            "output_name": list(cls.RETURN_NAMES or cls.RETURN_TYPES),
            "name": cls.CLASS,
            "display_name": cls.DISPLAY or cls.CLASS,
            "description": cls.DESCRIPTION,
            "python_module": cls.MODULE,
            "category": cls.CATEGORY,
            "output_node": cls.OUTPUT_NODE,
        }
        if cls.OUTPUT_TOOLTIPS is not None:
            out["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
        if cls.V3:
            return cls._v3_info(out)
        if cls.EXPERIMENTAL:
            out["experimental"] = True
        return out

    @classmethod
    def _v3_info(cls, out: dict[str, Any]) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for group, specs in out["input"].items():
            if group == "hidden":
                inputs[group] = {name: [kind] for name, kind in specs.items()}
                continue
            inputs[group] = {name: _v3_spec(spec) for name, spec in specs.items()}
        tooltips = out.pop("output_tooltips", [None] * len(cls.RETURN_TYPES))
        ordered = {key: out[key] for key in ("input", "input_order", "output", "output_is_list")}
        ordered["input"] = inputs
        ordered["output_name"] = out["output_name"]
        ordered["output_tooltips"] = tooltips
        ordered |= {
            "name": cls.CLASS,
            "display_name": cls.DISPLAY,
            "description": cls.DESCRIPTION,
            "python_module": cls.MODULE,
            "category": cls.CATEGORY,
            "output_node": cls.OUTPUT_NODE,
            "deprecated": False,
            "experimental": cls.EXPERIMENTAL,
            "api_node": False,
        }
        return ordered

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        raise NotImplementedError


def _v3_spec(spec: Any) -> Any:
    if not isinstance(spec, list) or not spec or not isinstance(spec[0], str):
        return spec
    extra = dict(spec[1]) if len(spec) > 1 else {}
    if spec[0] == "COMBO":
        extra.setdefault("multiselect", False)
    elif spec[0] == "STRING":
        extra.setdefault("multiline", False)
    return [spec[0], extra]


def hidden_prompt() -> dict[str, str]:
    return {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def file_hash(env: NodeEnv, name: object) -> str:
    """IS_CHANGED of the loaders: the file's sha256, or a fresh token when it is unreadable."""
    try:
        return hashlib.sha256(env.dirs.input_file(str(name)).read_bytes()).hexdigest()
    except OSError:
        return f"unreadable-{time.time_ns()}"


class FileLoader(Node):
    """A node that loads one file from ``input/``, named by its ``FILE_INPUT`` combo.

    As ComfyUI's loaders do, it accepts any existing file (VALIDATE_INPUTS, so not only the
    listed options) and keys the cache on the file's content (IS_CHANGED).
    """

    FILE_INPUT: ClassVar[str] = "image"

    @classmethod
    def validate(cls, env: NodeEnv, values: dict[str, Any]) -> bool | str:
        name = values.get(cls.FILE_INPUT)
        if not env.dirs.input_exists(name):
            return f"Invalid {cls.FILE_INPUT} file: {name}"
        return True

    @classmethod
    def is_changed(cls, env: NodeEnv, inputs: dict[str, Any]) -> object:
        return file_hash(env, inputs.get(cls.FILE_INPUT))
