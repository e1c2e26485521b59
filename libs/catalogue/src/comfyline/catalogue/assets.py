"""Job inputs that are files: an uploaded asset, or an output of an earlier job of the same owner.

A parameter bound with ``transform: "asset"`` takes either form; its JSON Schema is
:func:`asset_schema` (the gateway validates with it, the worker resolves it)::

    "ast_01j9zk3q8m6v0c2x7d4f5g6h7j"                    an upload: inputs/<owner>/<asset_id>.<ext>
    {"job": "job_01j9zk3q8m6v0c2x7d4f5g6h7j", "output": 0}   output 0 of that job (same owner)

``x-asset-kinds`` says which kinds of file the parameter accepts (image, audio, video).

A parameter may also offer Comfyline's built-in reference voices by name (``"amber"``): its
``oneOf`` then has a third form, a string ``enum`` of :func:`builtin_voices`. They are
recordings shipped in this package (``voices/``, made with espeak-ng; see ``voices.json``), each
with its transcript, which :func:`voice_transcript` gives to a ``<param>_transcript`` left empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from comfyline.contracts import ModelTemplate

from .validation import InputInvalid

ASSET_ID_PATTERN = "^ast_[0-9a-z]{26}$"
JOB_ID_PATTERN = "^job_[0-9a-z]{26}$"

#: The two forms an asset reference may take (the ``oneOf`` of every asset parameter).
ASSET_REF_FORMS: list[dict[str, Any]] = [
    {"type": "string", "pattern": ASSET_ID_PATTERN, "description": "an uploaded asset's id"},
    {
        "type": "object",
        "description": "an output of an earlier job of the same owner",
        "additionalProperties": False,
        "required": ["job"],
        "properties": {
            "job": {"type": "string", "pattern": JOB_ID_PATTERN},
            "output": {"type": "integer", "minimum": 0, "default": 0},
        },
    },
]


def asset_schema(kinds: list[str], description: str) -> dict[str, Any]:
    """The JSON Schema of an asset parameter accepting files of ``kinds``."""
    return {"description": description, "x-asset-kinds": kinds, "oneOf": ASSET_REF_FORMS}


@dataclass(frozen=True, slots=True)
class AssetRef:
    """An uploaded file, by id."""

    asset_id: str


@dataclass(frozen=True, slots=True)
class JobOutputRef:
    """Output ``output`` of job ``job_id``."""

    job_id: str
    output: int = 0


@dataclass(frozen=True, slots=True)
class BuiltinVoice:
    """One of the reference voices shipped with Comfyline, by name."""

    name: str

    @property
    def path(self) -> Path:
        return VOICES_DIR / str(_voices()["voices"][self.name]["file"])

    @property
    def transcript(self) -> str:
        return str(_voices()["transcript"])


VOICES_DIR = Path(__file__).parent / "voices"


@cache
def _voices() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VOICES_DIR / "voices.json").read_text())
    return loaded


def builtin_voices() -> list[str]:
    """The names of the built-in reference voices."""
    return sorted(_voices()["voices"])


def voice_transcript(template: ModelTemplate, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the transcript of each built-in voice it names, where it gave none."""
    properties = template.parameters.get("properties", {})
    out = dict(data)
    for param in asset_params(template):
        value, field = out.get(param), f"{param}_transcript"
        if isinstance(value, str) and value in _voices()["voices"] and field in properties:
            if not out.get(field):
                out[field] = BuiltinVoice(value).transcript
    return out


def parse_asset_ref(value: Any) -> AssetRef | JobOutputRef | BuiltinVoice:
    """Read an asset reference (already schema-valid at the gateway; checked again here)."""
    if isinstance(value, str) and value.startswith("ast_"):
        return AssetRef(value)
    if isinstance(value, str) and value in _voices()["voices"]:
        return BuiltinVoice(value)
    if isinstance(value, dict) and isinstance(value.get("job"), str):
        output = value.get("output", 0)
        if isinstance(output, int) and not isinstance(output, bool) and output >= 0:
            return JobOutputRef(value["job"], output)
    raise InputInvalid(
        f"not an asset reference: {value!r}",
        details={"errors": [{"field": "", "message": "expected 'ast_...' or {job, output}"}]},
    )


def asset_params(template: ModelTemplate) -> list[str]:
    """The parameters of a template that name files."""
    return [b.param for b in template.bindings if b.transform == "asset"]


# --- files in a workflow job's own graph -----------------------------------------------------
#: The Comfy API v2's typed asset reference, placed in a graph where a file name would go:
#: ``{"__type": "core/ASSET", "info": {"id": "ast_...", "hash": ..., "file_path": ...}}``.
ASSET_REF_TYPE = "core/ASSET"


@dataclass(frozen=True, slots=True)
class GraphAsset:
    """A ``core/ASSET`` reference at one node input of a workflow."""

    node_id: str
    input: str
    asset_id: str

    @property
    def param(self) -> str:
        """How the reference is named in errors and in the staged files' names."""
        return f"{self.node_id}.{self.input}"


def graph_assets(graph: Any) -> list[GraphAsset]:
    """Every ``core/ASSET`` reference at a node input of ``graph`` (``info.id`` names the
    asset and is authoritative; ``hash`` and ``file_path`` are hints and are not read)."""
    found: list[GraphAsset] = []
    nodes = graph.items() if isinstance(graph, dict) else []
    for node_id, node in nodes:
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for name, value in inputs.items() if isinstance(inputs, dict) else []:
            if not (isinstance(value, dict) and value.get("__type") == ASSET_REF_TYPE):
                continue
            info = value.get("info")
            asset_id = info.get("id") if isinstance(info, dict) else None
            if not isinstance(asset_id, str) or not asset_id:
                field = f"{node_id}.{name}"
                raise InputInvalid(
                    f"{field}: a core/ASSET reference names its asset in info.id",
                    details={"errors": [{"field": field, "message": "info.id is required"}]},
                )
            found.append(GraphAsset(str(node_id), str(name), asset_id))
    return found


def with_files(graph: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A copy of ``graph`` with each ``core/ASSET`` reference replaced by the file name
    ``names`` gives its :attr:`GraphAsset.param` (references without a name stay)."""
    out = {k: dict(node) if isinstance(node, dict) else node for k, node in graph.items()}
    for ref in graph_assets(graph):
        if ref.param in names:
            node = out[ref.node_id]
            node["inputs"] = {**node["inputs"], ref.input: names[ref.param]}
    return out
