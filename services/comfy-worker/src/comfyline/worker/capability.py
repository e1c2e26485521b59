"""What a ComfyUI server can run, read from ``/object_info``.

Node classes are the keys; model files are the options of combo inputs, which come in three
forms that must all be read: ``[[options]]``, ``[[options], {...}]`` and (newer nodes)
``["COMBO", {"options": [...]}]``. A model is servable when every node class its template needs
exists and every model file it names is among the options of its node's input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from comfyline.catalogue.objectinfo import combo_options
from comfyline.contracts import ModelTemplate

__all__ = ["Capability", "combo_options"]


@dataclass(frozen=True, slots=True)
class Capability:
    """Node classes and combo options of one server."""

    nodes: frozenset[str] = frozenset()
    options: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_object_info(cls, info: dict[str, Any]) -> Capability:
        """Read ``GET /object_info``."""
        options: dict[tuple[str, str], frozenset[str]] = {}
        for name, node in info.items():
            inputs = node.get("input") if isinstance(node, dict) else None
            if not isinstance(inputs, dict):
                continue
            for group in ("required", "optional"):
                specs = inputs.get(group)
                if not isinstance(specs, dict):
                    continue
                for input_name, spec in specs.items():
                    found = combo_options(spec)
                    if found is not None:
                        options[(name, input_name)] = frozenset(found)
        return cls(frozenset(info), options)

    def missing(self, template: ModelTemplate) -> list[str]:
        """What this server lacks to run ``template`` (empty: it can run it)."""
        needed = set(template.required_nodes) | {
            str(node.get("class_type")) for node in template.graph.values()
        }
        lacks = [f"node {name}" for name in sorted(needed - self.nodes)]
        for model in template.required_models:
            if model.node_class not in self.nodes:
                continue
            if model.file not in self.options.get((model.node_class, model.input), frozenset()):
                lacks.append(f"model {model.node_class}.{model.input}={model.file}")
        return lacks

    def servable(self, templates: Iterable[ModelTemplate]) -> list[str]:
        """The names of the templates this server can run (ComfyUI graphs only: a pipeline or a
        hosted provider's model is someone else's)."""
        return sorted(t.name for t in templates if t.engine == "comfyui" and not self.missing(t))
