"""Uploads by content: each upload's blake3, and an owner's upload found by it.

An upload's bytes live where every upload lives (``inputs/<owner>/<asset_id>.<ext>``: the
``/v1`` gallery lists them and workers stage them from there). Two small objects beside them
make uploads content-addressed:

- ``assets/<owner>/<asset_id>.json``: the upload's record (hash, size, type, file_path, tags);
- ``hashes/<owner>/<hex>``: the upload that holds those bytes.

Hashes are per owner: a hash names only the caller's own bytes, so asking by hash never tells
one owner what another has uploaded (the Comfy API v2's trust boundary for ``from-hash`` and
``by-hash``). One owner's identical bytes are stored once: the ``/api/v2`` upload of bytes the
owner already has drops the new copy once it is hashed and answers the upload that holds them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import BaseModel, Field, ValidationError

from comfyline.runtime import ObjectNotFound, ObjectStore

from .objects import ASSET_ID, find_upload
from .uploads import StoredAsset

HASH = re.compile(r"^blake3:([0-9a-f]{64})$")


class Upload(BaseModel):
    """An upload as its record says."""

    asset_id: str
    key: str
    hash: str | None = None
    size: int
    content_type: str
    file_path: str | None = None
    tags: list[str] = Field(default_factory=list)
    created_at: datetime | None = None


def hex_of(digest: str) -> str | None:
    """The hex of a ``blake3:<hex>`` hash (lowercase), or None if it is not one."""
    found = HASH.match(digest.strip().lower())
    return found.group(1) if found else None


class Uploads:
    """Records and the hash index of uploads, per owner."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @staticmethod
    def _record_key(owner: str, asset_id: str) -> str:
        return f"assets/{owner}/{asset_id}.json"

    @staticmethod
    def _hash_key(owner: str, hex_digest: str) -> str:
        return f"hashes/{owner}/{hex_digest}"

    async def register(
        self,
        owner: str,
        stored: StoredAsset,
        file_path: str | None = None,
        tags: list[str] | None = None,
    ) -> Upload:
        """Record a stored upload and index it by its hash."""
        upload = Upload(
            asset_id=stored.asset_id,
            key=stored.key,
            hash=stored.blake3,
            size=stored.size,
            content_type=stored.media.content_type,
            file_path=file_path or stored.filename,
            tags=tags or [],
            created_at=datetime.now(UTC),
        )
        record = upload.model_dump_json().encode()
        await self.store.put_bytes(
            self._record_key(owner, upload.asset_id), record, "application/json"
        )
        hex_digest = hex_of(stored.blake3)
        assert hex_digest is not None
        await self.store.put_bytes(
            self._hash_key(owner, hex_digest), upload.asset_id.encode(), "text/plain"
        )
        return upload

    async def get(self, owner: str, asset_id: str) -> Upload | None:
        """The owner's upload ``asset_id`` (None: missing, or someone else's)."""
        if not ASSET_ID.match(asset_id):
            return None
        found = await find_upload(self.store, owner, asset_id)
        if found is None:
            return None
        try:
            raw = await self.store.get_bytes(self._record_key(owner, asset_id))
            upload = Upload.model_validate_json(raw)
        except (ObjectNotFound, ValidationError):
            # Uploaded before uploads had records: known by its object alone.
            return Upload(
                asset_id=asset_id,
                key=found.key,
                size=found.size,
                content_type=found.content_type,
                created_at=found.last_modified,
            )
        return upload.model_copy(update={"key": found.key, "size": found.size})

    async def by_hash(self, owner: str, digest: str) -> Upload | None:
        """The owner's upload holding the bytes with this hash, if it still exists."""
        hex_digest = hex_of(digest)
        if hex_digest is None:
            return None
        try:
            asset_id = (await self.store.get_bytes(self._hash_key(owner, hex_digest))).decode()
        except ObjectNotFound:
            return None
        upload = await self.get(owner, asset_id)
        return upload if upload is not None and upload.hash == f"blake3:{hex_digest}" else None

    async def delete(self, owner: str, upload: Upload) -> None:
        """Remove the upload's bytes, its record and (if it points here) its hash entry."""
        await self.store.delete(upload.key)
        await self.store.delete(self._record_key(owner, upload.asset_id))
        hex_digest = hex_of(upload.hash or "")
        if hex_digest is not None:
            holder = await self.by_hash(owner, f"blake3:{hex_digest}")
            if holder is None:
                await self.store.delete(self._hash_key(owner, hex_digest))
