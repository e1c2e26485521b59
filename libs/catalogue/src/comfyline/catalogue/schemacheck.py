"""A quick yes/no for a parameter schema, with the same answer as ``jsonschema``.

Every submission's input is checked against its model's schema, and ``jsonschema``'s validator
took about a tenth of the gateway's CPU per submission (descending into each property builds a
new validator, looks the keyword up, calls a generator). :func:`compile_check` turns a schema
into plain closures that answer only "valid or not", keyword by keyword as ``jsonschema``'s
Draft 2020-12 keywords do (the same comparisons, its types as its type checker has them, its
own ``equal`` for ``enum`` and ``const``), for the keywords parameter schemas use. A schema
with any other validation keyword (``$ref``, ``patternProperties``, ``if``, ...) gets no
check, and its inputs go through ``jsonschema`` as before; so does every input the check finds
invalid, for the messages. Keywords ``jsonschema`` ignores (``default``, ``description``,
``x-…``) are ignored here too.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema._utils import equal  # (the very comparison ``enum`` and ``const`` use)

Check = Callable[[Any], bool]
_KEYWORDS = frozenset(Draft202012Validator.VALIDATORS)


def _integer(instance: Any) -> bool:
    if isinstance(instance, bool):
        return False
    return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())


#: Draft 2020-12's types as its type checker sees them (a test compares the two on every kind
#: of value): written out, they cost a call each instead of three.
TYPES: dict[str, Check] = {
    "array": lambda instance: isinstance(instance, list),
    "boolean": lambda instance: isinstance(instance, bool),
    "integer": _integer,
    "null": lambda instance: instance is None,
    "number": lambda instance: (
        isinstance(instance, numbers.Number) and not isinstance(instance, bool)
    ),
    "object": lambda instance: isinstance(instance, dict),
    "string": lambda instance: isinstance(instance, str),
}


class _Unsupported(Exception):
    """The schema uses what this module does not check: ``jsonschema`` decides alone."""


def compile_check(schema: Any, validator: Draft202012Validator) -> Check | None:
    """A function answering whether an instance is valid under ``schema`` exactly as
    ``validator`` (built on it) would, or None when the schema uses a keyword not covered."""
    if validator.format_checker is not None:
        return None  # (``format`` would assert: not covered)
    try:
        return _compile(schema)
    except (_Unsupported, TypeError, ValueError, re.error, RecursionError):
        return None


def _is(name: str) -> Check:
    test = TYPES.get(name) if isinstance(name, str) else None
    if test is None:
        raise _Unsupported(f"type {name!r}")
    return test


_is_number = _is("number")
_is_string = _is("string")
_is_object = _is("object")
_is_array = _is("array")


def _compile(schema: Any) -> Check:
    if schema is True:
        return lambda instance: True
    if schema is False:
        return lambda instance: False
    if not isinstance(schema, dict):
        raise _Unsupported("not a schema")
    checks: list[Check] = []
    for key, value in schema.items():
        if key not in _KEYWORDS or key == "format":
            continue  # not a validation keyword (or, with no format checker, not asserted)
        build = _BUILDERS.get(key)
        if build is None:
            raise _Unsupported(key)
        checks.append(build(value, schema))
    if len(checks) == 1:
        return checks[0]

    def every(instance: Any) -> bool:
        for check in checks:
            if not check(instance):
                return False
        return True

    return every


def _type(types: Any, schema: dict[str, Any]) -> Check:
    tests = [_is(name) for name in (types if isinstance(types, list) else [types])]
    if len(tests) == 1:
        return tests[0]
    return lambda instance: any(test(instance) for test in tests)


def _properties(properties: Any, schema: dict[str, Any]) -> Check:
    if not isinstance(properties, dict):
        raise _Unsupported("properties")
    subs = [(name, _compile(sub)) for name, sub in properties.items()]

    def check(instance: Any) -> bool:
        if not isinstance(instance, dict):
            return True
        for name, sub in subs:
            if name in instance and not sub(instance[name]):
                return False
        return True

    return check


def _additional(extra: Any, schema: dict[str, Any]) -> Check:
    if "patternProperties" in schema:
        raise _Unsupported("additionalProperties beside patternProperties")
    known = schema.get("properties", {})
    if _is_object(extra):
        sub = _compile(extra)
        return lambda instance: (
            not _is_object(instance)
            or all(sub(value) for name, value in instance.items() if name not in known)
        )
    if extra:
        return lambda instance: True
    return lambda instance: not _is_object(instance) or all(name in known for name in instance)


def _required(names: Any, schema: dict[str, Any]) -> Check:
    return lambda instance: not _is_object(instance) or all(name in instance for name in names)


def _bound(compare: Callable[[Any, Any], bool]) -> Callable[[Any, dict[str, Any]], Check]:
    def build(limit: Any, schema: dict[str, Any]) -> Check:
        return lambda instance: not _is_number(instance) or compare(instance, limit)

    return build


def _multiple_of(step: Any, schema: dict[str, Any]) -> Check:
    def check(instance: Any) -> bool:
        if not _is_number(instance):
            return True
        if isinstance(step, float):
            quotient = instance / step
            try:
                return not (int(quotient) != quotient)
            except OverflowError:
                return (Fraction(instance) / Fraction(step)).denominator == 1
        return not (instance % step)

    return check


def _size(
    applies: Check, compare: Callable[[int, Any], bool]
) -> Callable[[Any, dict[str, Any]], Check]:
    """A bound on ``len`` of the instances ``applies`` to (strings, or arrays)."""

    def build(limit: Any, schema: dict[str, Any]) -> Check:
        return lambda instance: not applies(instance) or compare(len(instance), limit)

    return build


def _pattern(pattern: Any, schema: dict[str, Any]) -> Check:
    search = re.compile(pattern).search
    return lambda instance: not _is_string(instance) or search(instance) is not None


def _enum(values: Any, schema: dict[str, Any]) -> Check:
    return lambda instance: any(equal(each, instance) for each in values)


def _const(value: Any, schema: dict[str, Any]) -> Check:
    return lambda instance: bool(equal(instance, value))


def _items(items: Any, schema: dict[str, Any]) -> Check:
    if "prefixItems" in schema:
        raise _Unsupported("items beside prefixItems")
    sub = _compile(items)
    return lambda instance: not _is_array(instance) or all(sub(each) for each in instance)


def _all_of(subs: Any, schema: dict[str, Any]) -> Check:
    checks = [_compile(sub) for sub in subs]
    return lambda instance: all(check(instance) for check in checks)


def _any_of(subs: Any, schema: dict[str, Any]) -> Check:
    checks = [_compile(sub) for sub in subs]
    return lambda instance: any(check(instance) for check in checks)


def _one_of(subs: Any, schema: dict[str, Any]) -> Check:
    checks = [_compile(sub) for sub in subs]
    return lambda instance: sum(1 for check in checks if check(instance)) == 1


def _not(sub: Any, schema: dict[str, Any]) -> Check:
    check = _compile(sub)
    return lambda instance: not check(instance)


_BUILDERS: dict[str, Callable[[Any, dict[str, Any]], Check]] = {
    "type": _type,
    "properties": _properties,
    "additionalProperties": _additional,
    "required": _required,
    "minimum": _bound(lambda value, limit: not (value < limit)),
    "maximum": _bound(lambda value, limit: not (value > limit)),
    "exclusiveMinimum": _bound(lambda value, limit: not (value <= limit)),
    "exclusiveMaximum": _bound(lambda value, limit: not (value >= limit)),
    "multipleOf": _multiple_of,
    "minLength": _size(_is_string, lambda size, limit: not (size < limit)),
    "maxLength": _size(_is_string, lambda size, limit: not (size > limit)),
    "minItems": _size(_is_array, lambda size, limit: not (size < limit)),
    "maxItems": _size(_is_array, lambda size, limit: not (size > limit)),
    "pattern": _pattern,
    "enum": _enum,
    "const": _const,
    "items": _items,
    "allOf": _all_of,
    "anyOf": _any_of,
    "oneOf": _one_of,
    "not": _not,
}
