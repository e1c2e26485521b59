"""API keys, webhook secrets and usage, as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from comfyline.contracts import ApiKeyRecord, Priority, Tier

#: Limits a key may override (see LimitSettings), plus a model's queue cap, plus
#: ``queue_without_capacity`` (1: this key's jobs are queued even when no live server can run
#: the model, for capacity that is coming; 0 or absent: 503 ``model_unavailable``).
LIMIT_NAMES = frozenset(
    {
        "submit_per_min",
        "enhance_per_min",
        "status_per_min",
        "upload_per_min",
        "keys_per_min",
        "active_jobs",
        "max_queue",
        "spend_per_day",
        "spend_per_month",
        "queue_without_capacity",
    }
)
KEY_EXAMPLE: dict[str, Any] = {
    "key_id": "key_01kax7r2m0a1b2c3d4e5f6g7h8",
    "owner": "u1",
    "role": "user",
    "name": "laptop",
    "created_at": "2026-11-23T12:00:00Z",
    "content_tier": "general",
    "limits": {"submit_per_min": 100},
}


class KeyCreate(BaseModel):
    """A key to create. ``owner``, ``role``, ``content_tier`` and ``limits``: admins only."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "laptop"}]})

    name: str = Field(default="", max_length=100)
    owner: str | None = Field(default=None, min_length=1, max_length=256)
    role: Literal["user", "admin"] = "user"
    content_tier: Tier | None = None
    limits: dict[str, float] = Field(default_factory=dict)
    lane: Priority | None = Field(
        default=None, description="admins: the only job priority the key may use (None: any)"
    )
    scopes: list[Literal["workflows"]] = Field(
        default_factory=list,
        description="admins: extra rights; workflows: submit any ComfyUI graph",
    )

    @field_validator("limits")
    @classmethod
    def _known_limits(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - LIMIT_NAMES)
        if unknown:
            raise ValueError(f"unknown limits {unknown}; known: {sorted(LIMIT_NAMES)}")
        if any(v < 0 for v in value.values()):
            raise ValueError("limits are not negative")
        return value


class KeyPublic(BaseModel):
    """A key without its secret."""

    model_config = ConfigDict(json_schema_extra={"examples": [KEY_EXAMPLE]})

    key_id: str
    owner: str
    role: Literal["user", "admin"]
    name: str = ""
    created_at: datetime
    revoked_at: datetime | None = None
    content_tier: Tier = "general"
    limits: dict[str, float] = Field(default_factory=dict)
    lane: Priority | None = None
    scopes: list[Literal["workflows"]] = Field(default_factory=list)

    @classmethod
    def of(cls, record: ApiKeyRecord) -> KeyPublic:
        return cls.model_validate(record.model_dump())


class KeyCreated(BaseModel):
    """A new key and its secret, shown this once."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"key": KEY_EXAMPLE, "secret": "cl_3q2...x8"}]}
    )

    key: KeyPublic
    secret: str = Field(description="shown once; store it now")


class KeyList(BaseModel):
    """Keys, oldest first."""

    object: Literal["list"] = "list"
    data: list[KeyPublic]


class WebhookSecretCreated(BaseModel):
    """A new webhook signing secret (Standard Webhooks), shown this once."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                    "created_at": "2026-11-23T12:00:00Z",
                }
            ]
        }
    )

    secret: str
    created_at: datetime


class WebhookSecretInfo(BaseModel):
    """Whether the owner has a webhook secret (never the secret itself)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"exists": True, "created_at": "2026-11-23T12:00:00Z"}]}
    )

    exists: bool
    created_at: datetime | None = None


class UsageItem(BaseModel):
    """One model's use in one period."""

    period: str = Field(description="YYYY-MM-DD or YYYY-MM")
    model: str
    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    gpu_seconds: float = 0.0
    cost: float = 0.0


class UsagePublic(BaseModel):
    """An owner's use per model and period, with totals."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "owner": "u1",
                    "period": "day",
                    "since": "2026-11-01",
                    "until": "2026-11-30",
                    "data": [
                        {
                            "period": "2026-11-23",
                            "model": "cpu-smoke",
                            "jobs": 3,
                            "succeeded": 3,
                            "failed": 0,
                            "gpu_seconds": 1.5,
                            "cost": 0.0,
                        }
                    ],
                    "totals": {
                        "period": "total",
                        "model": "*",
                        "jobs": 3,
                        "succeeded": 3,
                        "gpu_seconds": 1.5,
                    },
                }
            ]
        }
    )

    owner: str
    period: Literal["day", "month"]
    since: str
    until: str
    data: list[UsageItem]
    totals: UsageItem
