"""Validating a job's input against its model's parameter schema.

The result is the input as it will run: defaults filled in, a preset's values applied under the
user's own, and a seed chosen when the model takes one and none was given (so a job can be
re-run exactly).
"""

from __future__ import annotations

import secrets
from typing import Any

from jsonschema import Draft202012Validator

from comfyline.contracts import ComfylineError, ErrorCode, ModelTemplate

from .schemacheck import Check, compile_check

MAX_SEED = 2**32 - 1
#: A validator per schema object, as built (checked by identity): a template's schema is made
#: once per catalogue read, and building a validator cost as much as a job's validation. With
#: it, the schema's quick check (:mod:`.schemacheck`), when the schema has one.
_VALIDATORS: dict[int, tuple[dict[str, Any], Draft202012Validator, Check | None]] = {}
_VALIDATORS_KEPT = 512


class InputInvalid(ComfylineError):
    """The input does not match the model's parameter schema (details list every problem)."""

    code = ErrorCode.VALIDATION_ERROR


def _with_defaults(schema: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    filled = dict(data)
    for name, spec in schema.get("properties", {}).items():
        if name not in filled and isinstance(spec, dict) and "default" in spec:
            filled[name] = spec["default"]
    return filled


def validate_input(template: ModelTemplate, raw: dict[str, Any]) -> dict[str, Any]:
    """Check ``raw`` against the template; return the input as it will run.

    Raises:
        InputInvalid: with ``details.errors``, one entry per problem (``field``, ``message``).
    """
    if not isinstance(raw, dict):
        raise InputInvalid("input must be an object")
    data = dict(raw)
    preset = data.get("preset")
    if preset is not None and template.presets:
        if preset not in template.presets:
            raise InputInvalid(
                f"unknown preset {preset!r}",
                details={
                    "errors": [{"field": "preset", "message": "unknown preset"}],
                    "presets": sorted(template.presets),
                },
            )
        data = {**template.presets[preset], **data}
    data = _with_defaults(template.parameters, data)
    validator, check = _validator(template.parameters)
    errors = [] if _passes(check, data) else _errors(validator, data)
    if errors:
        problems = [
            {
                "field": ".".join(str(p) for p in err.absolute_path) or _missing_field(err.message),
                "message": err.message,
            }
            for err in errors
        ]
        raise InputInvalid(
            f"input is not valid for {template.name}: {problems[0]['message']}",
            details={"errors": problems},
        )
    _check_multiples(template, data)
    if "seed" in template.parameters.get("properties", {}) and data.get("seed") in (None, -1):
        data["seed"] = random_seed(template)
    return apply_choices(template, data, given=set(raw))


def _validator(schema: dict[str, Any]) -> tuple[Draft202012Validator, Check | None]:
    kept = _VALIDATORS.get(id(schema))
    if kept is not None and kept[0] is schema:
        return kept[1], kept[2]
    if len(_VALIDATORS) >= _VALIDATORS_KEPT:
        _VALIDATORS.clear()
    validator = Draft202012Validator(schema)
    check = compile_check(schema, validator)
    _VALIDATORS[id(schema)] = (schema, validator, check)  # (the schema kept: its id not reused)
    return validator, check


def _passes(check: Check | None, data: dict[str, Any]) -> bool:
    """Whether the quick check says valid (when it cannot tell, the validator decides)."""
    if check is None:
        return False
    try:
        return check(data)
    except Exception:  # (what the schema's own validator then raises or reports)
        return False


def _errors(validator: Draft202012Validator, data: dict[str, Any]) -> list[Any]:
    return sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))


def random_seed(template: ModelTemplate) -> int:
    """A random seed within the template's own range (some nodes take only 31 bits)."""
    spec = template.parameters.get("properties", {}).get("seed", {})
    top = spec.get("maximum", MAX_SEED) if isinstance(spec, dict) else MAX_SEED
    return secrets.randbelow(min(int(top), MAX_SEED) + 1)


def apply_choices(
    template: ModelTemplate, data: dict[str, Any], given: set[str] | None = None
) -> dict[str, Any]:
    """Expand choice parameters into the values they stand for.

    A property may carry ``x-sets``: for each of its values, the other (internal) values it
    sets, e.g. ``resolution: "480p"`` sets ``width`` and ``height``, ``style: "anime"`` sets the
    words the prompt is composed from. A value the caller gave itself (``given``) is kept.
    """
    out = dict(data)
    keep = set(data) if given is None else given
    for name, spec in template.parameters.get("properties", {}).items():
        choices = spec.get("x-sets") if isinstance(spec, dict) else None
        if not isinstance(choices, dict):
            continue
        chosen = choices.get(str(out.get(name)))
        for key, value in (chosen or {}).items():
            if key not in keep:
                out[key] = value
    return out


def _missing_field(message: str) -> str:
    # jsonschema says "'prompt' is a required property": name the field.
    return message.split("'")[1] if message.count("'") >= 2 else ""


def _check_multiples(template: ModelTemplate, data: dict[str, Any]) -> None:
    """``multipleOf`` is in the schema, but say it in words users understand."""
    for name, spec in template.parameters.get("properties", {}).items():
        step = spec.get("multipleOf") if isinstance(spec, dict) else None
        if step and isinstance(data.get(name), int) and data[name] % step:
            raise InputInvalid(
                f"{name} must be a multiple of {step}",
                details={"errors": [{"field": name, "message": f"must be a multiple of {step}"}]},
            )
