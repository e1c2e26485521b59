"""Rendering a template into the ComfyUI API-format graph a worker posts."""

from __future__ import annotations

import copy
import math
from typing import Any

from comfyline.contracts import Binding, ComfylineError, ErrorCode, ModelTemplate, OutputSpec

from .assets import graph_assets, voice_transcript, with_files
from .validation import apply_choices, random_seed


class TemplateError(ComfylineError):
    """The template and the input do not fit together (a catalogue bug, not the user's)."""

    code = ErrorCode.TEMPLATE_ERROR


def wan_frames(duration_s: float, fps: float) -> int:
    """WAN's frame count for a duration: 4n+1 frames, at least 5."""
    frames = max(1, round(duration_s * fps))
    return max(5, 4 * math.ceil((frames - 1) / 4) + 1)


def _value(binding: Binding, data: dict[str, Any], assets: dict[str, str]) -> Any:
    value: Any = data.get(binding.param)
    match binding.transform:
        case None:
            return value
        case "asset":
            if binding.param not in assets:
                raise TemplateError(f"asset for {binding.param!r} was not uploaded")
            return assets[binding.param]
        case "frames":
            return wan_frames(float(value), float(data.get("fps", 16)))
        case "int":
            return int(value)
        case "float":
            return float(value)
    raise TemplateError(f"unknown transform {binding.transform!r}")  # pragma: no cover


def compose_prompt(template: ModelTemplate, data: dict[str, Any]) -> str | None:
    """The prompt as the template composes it from the input (e.g. a portrait's fields)."""
    spec = template.prompt
    if spec is None:
        return None
    if spec.compose:
        fields = {k: ("" if v is None else v) for k, v in data.items()}
        try:
            text = spec.compose.format(**fields)
        except (KeyError, IndexError) as exc:
            raise TemplateError(f"prompt composition needs {exc}") from exc
        return " ".join(text.replace(" ,", ",").split()).strip(" ,")
    value = data.get(spec.param)
    return None if value is None else str(value)


def prepare_input(template: ModelTemplate, data: dict[str, Any]) -> dict[str, Any]:
    """The input as it is rendered: presets, defaults and choices filled in, prompt composed.

    The worker's view of a ``RunJob.input`` that the gateway already validated (and the
    orchestrator may have given its final prompt): nothing is refused here, only completed,
    so a value already present always wins.
    """
    out = dict(data)
    preset = out.get("preset")
    if isinstance(preset, str) and preset in template.presets:
        out = {**template.presets[preset], **out}
    for name, spec in template.parameters.get("properties", {}).items():
        if name not in out and isinstance(spec, dict) and "default" in spec:
            out[name] = spec["default"]
    if "seed" in template.parameters.get("properties", {}) and out.get("seed") in (None, -1):
        out["seed"] = random_seed(template)  # unvalidated input: still a valid seed
    out = apply_choices(template, out, given=set(out))
    spec = template.prompt
    if spec is not None and spec.compose and not out.get(spec.param):
        out[spec.param] = compose_prompt(template, out)
    return voice_transcript(template, out)


def render(
    template: ModelTemplate, data: dict[str, Any], assets: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """The graph with every bound parameter written into its node input.

    Args:
        template: the model.
        data: the validated input (``validate_input``), with the final prompt.
        assets: parameter -> file name as ComfyUI named it on upload.
    """
    if template.kind == "workflow":
        return workflow_graph(data, assets)
    graph = copy.deepcopy(template.graph)
    for binding in template.bindings:
        if binding.param not in data and binding.transform != "asset":
            continue
        node = graph.get(binding.node)
        if node is None:
            raise TemplateError(f"binding {binding.param!r} names missing node {binding.node!r}")
        node.setdefault("inputs", {})[binding.input] = _value(binding, data, assets or {})
    return graph


def workflow_graph(
    data: dict[str, Any], assets: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """A workflow job's graph: the client's own API-format graph, as validated at submission,
    with each ``core/ASSET`` reference replaced by the name ComfyUI gave the staged file."""
    graph = data.get("workflow")
    if not isinstance(graph, dict):
        raise TemplateError("a workflow job carries its graph as input.workflow")
    names = assets or {}
    missing = [ref.param for ref in graph_assets(graph) if ref.param not in names]
    if missing:
        raise TemplateError(f"workflow files not staged: {', '.join(missing)}")
    return copy.deepcopy(with_files(graph, names))


def output_specs(template: ModelTemplate, data: dict[str, Any]) -> list[OutputSpec]:
    """The output nodes to collect: the template's, or those found in a workflow job's graph."""
    if template.kind != "workflow":
        return list(template.outputs)
    try:
        return [OutputSpec.model_validate(item) for item in data.get("outputs") or []]
    except ValueError as exc:
        raise TemplateError(f"a workflow job's outputs are malformed: {exc}") from exc
