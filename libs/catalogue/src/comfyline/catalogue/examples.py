"""An example input for any model, made from its parameter schema (the API docs show one per
model; a test validates each against its model, so they cannot drift from the catalogue)."""

from __future__ import annotations

from typing import Any

from comfyline.contracts import ModelTemplate

#: An uploaded asset's id, as the API docs show it (upload first, then use the id you get).
EXAMPLE_ASSET = "ast_01jc8x9k2m3n4p5q6r7s8t9v0w"
SAMPLE_TEXT = {
    "prompt": "a red fox in fresh snow, morning light",
    "description": "an old sailor with a grey beard",
    "text": "Hello from Comfyline.",
}


def example_input(template: ModelTemplate) -> dict[str, Any]:
    """The model's required parameters, each with a plausible value; the rest left to defaults."""
    properties: dict[str, Any] = template.parameters.get("properties", {})
    out: dict[str, Any] = {}
    for name in template.parameters.get("required", []):
        spec = properties.get(name, {})
        if "x-asset-kinds" in spec:
            out[name] = EXAMPLE_ASSET
        elif "default" in spec:
            out[name] = spec["default"]
        elif "enum" in spec:
            out[name] = spec["enum"][0]
        elif spec.get("type") in ("integer", "number"):
            out[name] = spec.get("minimum", 1)
        else:
            out[name] = SAMPLE_TEXT.get(name, f"your {name.replace('_', ' ')}")
    return out
