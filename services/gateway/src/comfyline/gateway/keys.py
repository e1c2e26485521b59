"""API keys and webhook signing secrets, kept in the ``keys`` bucket.

Layout of the bucket (one bucket, three kinds of key)::

    <sha256 hex of the secret>   -> ApiKeyRecord     (checked on every request: one KV get)
    idx.<owner>.<key_id>         -> the sha256 hex   (list an owner's keys, revoke by id)
    webhook.<owner>              -> WebhookSecret    (read by the orchestrator to sign webhooks)

Secrets look like ``cl_<43 url-safe chars>`` and are shown once: only their SHA-256 digest is
stored (fast to check; a 256-bit random secret needs no slow password hash). The same class backs
``/v1/keys`` and the ``python -m comfyline.gateway keys`` command.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Literal

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from comfyline.contracts import (
    ApiKeyRecord,
    ErrorCode,
    Priority,
    Tier,
    WebhookSecret,
    new_key_id,
    owner_token,
    utcnow,
    webhook_secret_key,
)

from .errors import ApiError, not_found
from .kv import get_model, nats_errors, scan

KEY_PREFIX = "cl_"


def digest(secret: str) -> str:
    """The stored form of an API key: SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A fresh API key secret (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyStore:
    """Create, find, list and revoke API keys; rotate webhook secrets."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def create(
        self,
        owner: str,
        *,
        role: str = "user",
        name: str = "",
        content_tier: Tier = "general",
        limits: dict[str, float] | None = None,
        lane: Priority | None = None,
        scopes: list[Literal["workflows"]] | None = None,
    ) -> tuple[str, ApiKeyRecord]:
        """A new key for ``owner``: the secret (show it once) and its record."""
        secret = new_secret()
        record = ApiKeyRecord(
            key_id=new_key_id(),
            owner=owner,
            role="admin" if role == "admin" else "user",
            name=name,
            created_at=utcnow(),
            content_tier=content_tier,
            limits=dict(limits or {}),
            lane=lane,
            scopes=list(scopes or []),
        )
        hashed = digest(secret)
        async with nats_errors("creating a key"):
            await self.kv.create(hashed, record.to_bytes())
            await self.kv.put(self._index(owner, record.key_id), hashed.encode())
        return secret, record

    async def find(self, secret: str) -> ApiKeyRecord | None:
        """The record of a presented secret, or None."""
        if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
            return None
        found = await get_model(self.kv, digest(secret), ApiKeyRecord)
        return found[0] if found else None

    async def list(self, owner: str | None) -> list[ApiKeyRecord]:
        """An owner's keys (every key when ``owner`` is None), oldest first."""
        pattern = f"idx.{owner_token(owner)}.*" if owner is not None else "idx.>"
        records = []
        for _, hashed in await scan(self.kv, pattern):
            found = await get_model(self.kv, hashed.decode(), ApiKeyRecord)
            if found:
                records.append(found[0])
        return sorted(records, key=lambda r: r.key_id)

    async def revoke(self, key_id: str, owner: str | None) -> ApiKeyRecord:
        """Mark a key revoked. ``owner`` None: any owner's (an admin). Unknown: 404."""
        if not key_id.startswith("key_") or not key_id.replace("_", "").isalnum():
            raise not_found("key")
        pattern = f"idx.{owner_token(owner)}.{key_id}" if owner is not None else f"idx.*.{key_id}"
        entries = await scan(self.kv, pattern)
        if not entries:
            raise not_found("key")
        hashed = entries[0][1].decode()
        for _ in range(5):
            found = await get_model(self.kv, hashed, ApiKeyRecord)
            if found is None:
                raise not_found("key")
            record, revision = found
            if owner is not None and record.owner != owner:
                raise not_found("key")
            if record.revoked_at is not None:
                return record
            revoked = record.model_copy(update={"revoked_at": utcnow()})
            try:
                async with nats_errors("revoking a key"):
                    await self.kv.update(hashed, revoked.to_bytes(), last=revision)
                return revoked
            except KeyWrongLastSequenceError:
                continue
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "key changed concurrently; retry")

    async def rotate_webhook_secret(self, owner: str) -> WebhookSecret:
        """A new webhook signing secret for ``owner`` (the old one stops working at once)."""
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        record = WebhookSecret(owner=owner, secret=secret, created_at=utcnow())
        async with nats_errors("rotating a webhook secret"):
            await self.kv.put(self.webhook_key(owner), record.to_bytes())
        return record

    async def webhook_secret(self, owner: str) -> WebhookSecret | None:
        """The owner's current webhook secret record, if any."""
        found = await get_model(self.kv, self.webhook_key(owner), WebhookSecret)
        return found[0] if found else None

    @staticmethod
    def webhook_key(owner: str) -> str:
        """Where an owner's webhook secret lives (the orchestrator reads the same key)."""
        return webhook_secret_key(owner_token(owner))

    @staticmethod
    def _index(owner: str, key_id: str) -> str:
        return f"idx.{owner_token(owner)}.{key_id}"
