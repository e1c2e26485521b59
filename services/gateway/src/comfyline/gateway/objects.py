"""Listing and finding objects in the bucket: uploads (``inputs/``) and outputs (``outputs/``).

``ObjectStore`` (libs/runtime) has no listing call, so this module lists through its minio
client, in a thread like every other minio call, and translates minio's errors the same way.
"""

from __future__ import annotations

import asyncio
import itertools
import mimetypes
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import urllib3
from minio.error import S3Error

from comfyline.runtime import ObjectStore, StorageError

EXTENSIONS: dict[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "audio/wav": "wav",
    "audio/mpeg": "mp3",
    "audio/flac": "flac",
    "audio/ogg": "ogg",
    "audio/mp4": "m4a",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "video/webm": "webm",
}
TYPES_BY_EXT = {ext: ctype for ctype, ext in EXTENSIONS.items()}
ASSET_ID = re.compile(r"^ast_[0-9a-z]{26}$")


@dataclass(frozen=True, slots=True)
class Listed:
    """One object as a listing shows it."""

    key: str
    size: int
    last_modified: datetime | None

    @property
    def content_type(self) -> str:
        ext = self.key.rsplit(".", 1)[-1].lower() if "." in self.key else ""
        return (
            TYPES_BY_EXT.get(ext) or mimetypes.guess_type(self.key)[0] or "application/octet-stream"
        )


async def list_prefix(
    store: ObjectStore, prefix: str, start_after: str | None = None, limit: int = 100
) -> list[Listed]:
    """Up to ``limit`` objects under ``prefix`` in key order, after ``start_after``."""

    def run() -> list[Listed]:
        objects: Any = store.client.list_objects(
            store.bucket, prefix=prefix, recursive=True, start_after=start_after or None
        )
        return [
            Listed(o.object_name, int(o.size or 0), o.last_modified)
            for o in itertools.islice(objects, limit)
            if not o.is_dir
        ]

    try:
        return await asyncio.to_thread(run)
    except S3Error as exc:
        raise StorageError(f"S3 error {exc.code}: {exc.message}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise StorageError(f"S3 unreachable: {exc}") from exc


def upload_key(owner: str, asset_id: str, content_type: str) -> str:
    """``inputs/<owner>/<asset_id>.<ext>``."""
    return f"inputs/{owner}/{asset_id}.{EXTENSIONS.get(content_type, 'bin')}"


async def find_upload(store: ObjectStore, owner: str, asset_id: str) -> Listed | None:
    """The stored upload ``asset_id`` of ``owner`` (None: missing, or someone else's)."""
    found = await list_prefix(store, f"inputs/{owner}/{asset_id}.", limit=1)
    return found[0] if found else None
