"""Uploads and job outputs in the caller's gallery, and fresh links, as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .jobs import URL, Incoming


class AssetPublic(BaseModel):
    """An upload or a job output in the caller's gallery."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "ast_01kax7r2m0a1b2c3d4e5f6g7h8",
                    "source": "upload",
                    "kind": "image",
                    "content_type": "image/png",
                    "size": 2048,
                    "width": 512,
                    "height": 512,
                    "created_at": "2026-11-23T12:00:00Z",
                    "url": URL,
                    "url_expires_at": "2026-11-23T12:15:00Z",
                }
            ]
        }
    )

    id: str | None = Field(default=None, description="asset id (uploads)")
    source: Literal["upload", "output"]
    job_id: str | None = None
    output: int | None = None
    kind: str
    content_type: str
    size: int
    width: int | None = None
    height: int | None = None
    filename: str | None = None
    created_at: datetime | None = None
    url: str
    url_expires_at: datetime


class AssetList(BaseModel):
    """A page of the caller's assets."""

    object: Literal["list"] = "list"
    data: list[AssetPublic]
    next_cursor: str | None = None
    has_more: bool = False


class SignRequest(Incoming):
    """How long the new link should last."""

    expires_s: int = Field(default=900, ge=60, le=7 * 24 * 3600)


class SignedLink(BaseModel):
    """A fresh presigned link."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"url": URL, "expires_at": "2026-11-23T12:15:00Z"}]}
    )

    url: str
    expires_at: datetime
