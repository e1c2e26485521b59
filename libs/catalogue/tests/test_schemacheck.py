"""The quick schema check answers as jsonschema's Draft 2020-12 validator does, or not at all."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from comfyline.catalogue import Catalogue, InputInvalid, validate_input
from comfyline.catalogue.schemacheck import TYPES, compile_check

CATALOGUE = Catalogue.builtin()
SCHEMAS = {t.name: t.parameters for t in CATALOGUE}

VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2**70, 0.0, 1.0, -0.0, 1.5, 1e308, -1e308, math.inf, -math.inf,
    math.nan, Decimal("2"), Decimal("2.5"), Fraction(1, 2), "", "a", "0", [], [1], {}, {"a": 1},
    (1, 2),
]  # fmt: skip

#: Hand-made schemas for every keyword the check covers, edge cases included.
KEYWORD_SCHEMAS: list[Any] = [
    True,
    False,
    {"type": ["integer", "null"]},
    {"type": "number", "minimum": 0, "maximum": 10},
    {"exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"multipleOf": 0.1},
    {"multipleOf": 0.01, "type": "number"},
    {"multipleOf": 8},
    {"type": "string", "minLength": 1, "maxLength": 3},
    {"minItems": 1, "maxItems": 2},
    {"pattern": "^[a-z]+$"},
    {"pattern": "\\d"},
    {"enum": [1, True, "a", None, [1, 2], {"k": 0}]},
    {"enum": [False, 0.5]},
    {"const": 0},
    {"const": False},
    {"const": [True]},
    {"items": {"type": "integer"}},
    {"items": False},
    {"items": True},
    {"allOf": [{"minimum": 1}, {"maximum": 5}]},
    {"anyOf": [{"type": "string"}, {"minimum": 3}]},
    {"oneOf": [{"type": "number"}, {"type": "integer"}]},
    {"oneOf": [{"type": "string", "pattern": "^ast_"}, {"type": "object", "required": ["job"]}]},
    {"not": {"type": "null"}},
    {"type": "object", "required": ["a"], "properties": {"a": {"type": "boolean"}}},
    {"properties": {"a": {"minimum": 2}}, "additionalProperties": False},
    {"properties": {"a": True}, "additionalProperties": {"type": "string"}},
    {"additionalProperties": True, "default": 3, "description": "x", "x-sets": {"a": 1}},
    {"format": "email", "type": "string"},
    {"type": "object", "properties": {"n": {"type": "array", "items": {"enum": [1, 2]}}}},
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.sampled_from([0, 1, 2, 3, 8, 16, 0.1, 0.3, 1.0, 5.0, 1e308, "a", "ast_", "abc", "1"])
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "job", "k", "n"]) | st.text(max_size=3), inner)
    ),
    max_leaves=8,
)


def _answer(judge: Any, instance: Any) -> bool | None:
    """True or False, or None where the judge fails on the instance (an exception)."""
    try:
        return bool(judge(instance))
    except Exception:
        return None


def _same(schema: Any, instance: Any) -> None:
    """The check's answer is jsonschema's; where jsonschema fails, the check does not say
    valid (validation then falls back to jsonschema, which fails as it did)."""
    validator = Draft202012Validator(schema)
    check = compile_check(schema, validator)
    assert check is not None, schema
    expected = _answer(validator.is_valid, instance)
    if expected is None:
        assert _answer(check, instance) is not True, (schema, instance)
    else:
        assert _answer(check, instance) == expected, (schema, instance)


def _near(spec: Any) -> st.SearchStrategy[Any]:
    """Values around what a property's schema allows."""
    if not isinstance(spec, dict):
        return json_values
    picks: list[Any] = []
    for key in ("minimum", "maximum"):
        if isinstance(spec.get(key), int | float):
            limit = spec[key]
            picks += [limit, limit - 1, limit + 1, limit - 0.5, limit + 0.5, float(limit)]
    for key in ("minLength", "maxLength"):
        if isinstance(spec.get(key), int):
            picks += ["x" * max(0, spec[key] + d) for d in (-1, 0, 1)]
    picks += list(spec.get("enum", [])) + ([spec["default"]] if "default" in spec else [])
    picks += ["ast_" + "0" * 26, "ast_" + "0" * 25, {"job": "job_" + "a" * 26, "output": 1}]
    picks += [{"job": "job_" + "a" * 26, "extra": 1}, {"output": 0}]
    return st.sampled_from(picks) | json_values


@st.composite
def template_input(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties", {})
    data = {name: draw(_near(spec)) for name, spec in props.items() if draw(st.booleans())}
    if draw(st.integers(0, 5)) == 0:
        data[draw(st.text(max_size=4))] = draw(json_values)
    return data


def test_the_types_are_draft_2020_12_types() -> None:
    checker = Draft202012Validator.TYPE_CHECKER
    for name, test in TYPES.items():
        for value in VALUES:
            assert test(value) == checker.is_type(value, name), (name, value)
    assert set(TYPES) == set(checker._type_checkers)


def test_every_built_in_template_has_a_quick_check() -> None:
    for name, schema in SCHEMAS.items():
        assert compile_check(schema, Draft202012Validator(schema)) is not None, name


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_template_input_is_judged_as_jsonschema_judges_it(name: str, data: st.DataObject) -> None:
    schema = SCHEMAS[name]
    _same(schema, data.draw(template_input(schema)))


@pytest.mark.parametrize("schema", KEYWORD_SCHEMAS, ids=range(len(KEYWORD_SCHEMAS)))
@settings(max_examples=120, deadline=None)
@given(instance=json_values)
def test_each_keyword_is_judged_as_jsonschema_judges_it(schema: Any, instance: Any) -> None:
    _same(schema, instance)


@pytest.mark.parametrize("schema", KEYWORD_SCHEMAS, ids=range(len(KEYWORD_SCHEMAS)))
def test_each_keyword_on_edge_values(schema: Any) -> None:
    for value in VALUES:
        _same(schema, value)


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/a", "$defs": {"a": {"type": "string"}}},
        {"patternProperties": {"^a": {"type": "string"}}},
        {"properties": {"a": {"uniqueItems": True}}},
        {"if": {"type": "string"}, "then": {"minLength": 2}},
        {"prefixItems": [{"type": "string"}], "items": False},
        {"type": "decimal"},
        {"properties": {"a": {"dependentRequired": {"a": ["b"]}}}},
        {"pattern": "("},
        {"properties": {"a": 3}},
    ],
)
def test_a_schema_beyond_the_covered_keywords_gets_no_check(schema: Any) -> None:
    assert compile_check(schema, Draft202012Validator(schema)) is None


def test_a_validator_that_checks_formats_gets_no_check() -> None:
    schema = {"type": "string", "format": "email"}
    assert compile_check(schema, Draft202012Validator(schema)) is not None
    asserting = Draft202012Validator(schema, format_checker=FormatChecker())
    assert compile_check(schema, asserting) is None


def test_a_valid_input_needs_no_validator_and_an_invalid_one_gets_its_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    template = CATALOGUE.get("cpu-smoke")
    validate_input(template, {"width": 64})  # (the template's validator is built and kept)
    called: list[Any] = []
    real = Draft202012Validator.iter_errors

    def counted(self: Draft202012Validator, instance: Any) -> Any:
        called.append(instance)
        return real(self, instance)

    monkeypatch.setattr(Draft202012Validator, "iter_errors", counted)
    assert validate_input(template, {"width": 128, "height": 64})["width"] == 128
    assert called == []
    with pytest.raises(InputInvalid) as caught:
        validate_input(template, {"width": 8, "color": "red"})
    assert len(called) == 1
    fields = sorted(e["field"] for e in caught.value.details["errors"])
    assert fields == ["color", "width"]
