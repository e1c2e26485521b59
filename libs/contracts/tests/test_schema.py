"""The exported JSON Schemas accept every example, and AsyncAPI names every message it uses."""

from __future__ import annotations

from jsonschema import Draft202012Validator

from comfyline.contracts.examples import examples
from comfyline.contracts.schema import MESSAGES, asyncapi, json_schemas


def test_every_example_validates_against_its_exported_schema() -> None:
    schemas = json_schemas()
    for message in examples():
        schema = schemas[type(message).__name__]
        Draft202012Validator.check_schema(schema)
        errors = list(Draft202012Validator(schema).iter_errors(message.model_dump(mode="json")))
        assert not errors, (type(message).__name__, errors[0].message)


def test_a_wrong_payload_is_refused_by_the_schema() -> None:
    schema = json_schemas()["RunEvent"]
    bad = {"job_id": "job_1", "kind": "exploded", "attempt": 0, "worker_id": "w"}
    assert list(Draft202012Validator(schema).iter_errors(bad))


def test_asyncapi_references_only_defined_messages() -> None:
    doc = asyncapi()
    defined = set(doc["components"]["messages"])
    assert defined == {m.__name__ for m in MESSAGES}
    for channel in doc["channels"].values():
        for ref in channel["messages"].values():
            assert ref["$ref"].rsplit("/", 1)[-1] in defined
