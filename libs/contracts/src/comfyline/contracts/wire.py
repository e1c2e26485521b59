"""The base of every message on the wire.

Readers are tolerant: unknown fields are ignored, so an older service keeps working when a newer
one adds a field. The contract tests parse every example strictly instead, by passing
``context={"strict": True}`` (see :func:`parse_strict`), so nothing drifts unnoticed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Self, TypeVar
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class WireModel(BaseModel):
    """A model that crosses a process boundary: tolerant by default, strict on request."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, use_enum_values=False)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_when_strict(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and info.context and info.context.get("strict"):
            known = set(cls.model_fields)
            known |= {f.alias for f in cls.model_fields.values() if f.alias}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ValueError(f"unknown fields for {cls.__name__}: {unknown}")
        return data

    def to_bytes(self) -> bytes:
        """Serialise as compact JSON, leaving out fields that are None."""
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> Self:
        """Parse tolerantly (unknown fields ignored)."""
        return cls.model_validate_json(raw)


class Message(WireModel):
    """An event or command: versioned, identified and timestamped."""

    schema_version: int = SCHEMA_VERSION
    event_id: str = Field(default_factory=lambda: uuid4().hex)
    occurred_at: datetime = Field(default_factory=utcnow)


M = TypeVar("M", bound=WireModel)


def parse_strict(model: type[M], data: dict[str, Any] | bytes | str) -> M:
    """Parse refusing unknown fields at every level (for contract tests)."""
    if isinstance(data, bytes | str):
        return model.model_validate_json(data, context={"strict": True})
    return model.model_validate(data, context={"strict": True})
