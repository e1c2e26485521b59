"""Every example message re-parses strictly, and readers stay tolerant of new fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from comfyline.contracts import JobEvent, WireModel, parse_strict
from comfyline.contracts.examples import examples


@pytest.mark.parametrize("message", examples(), ids=lambda m: type(m).__name__)
def test_every_example_round_trips_strictly(message: WireModel) -> None:
    as_json = message.model_dump(mode="json")
    again = parse_strict(type(message), as_json)
    assert again == message
    assert parse_strict(type(message), message.to_bytes()) == type(message).from_bytes(
        message.to_bytes()
    )


def test_strict_parse_refuses_unknown_fields_at_any_depth() -> None:
    event = next(m for m in examples() if isinstance(m, JobEvent) and m.outputs)
    data = event.model_dump(mode="json")
    data["outputs"][0]["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        parse_strict(JobEvent, data)


def test_tolerant_parse_ignores_unknown_fields() -> None:
    event = next(m for m in examples() if isinstance(m, JobEvent))
    data = event.model_dump(mode="json")
    data["added_in_a_later_version"] = {"x": 1}
    assert JobEvent.model_validate(data) == event


def test_every_message_carries_version_id_and_time() -> None:
    for message in examples():
        if "event_id" in type(message).model_fields:
            dumped = message.model_dump()
            assert dumped["schema_version"] >= 1
            assert dumped["event_id"]
            assert dumped["occurred_at"].tzinfo is not None
