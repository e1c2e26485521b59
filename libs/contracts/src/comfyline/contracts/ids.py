"""Time-ordered identifiers.

Job ids sort by creation time (a ULID: 48 bits of milliseconds, 80 random bits, Crockford base32,
lower-cased), so a listing sorted by id is newest-last and a cursor is just an id. Every id here is
a valid NATS subject token.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _ulid(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_job_id(now_ms: int | None = None) -> str:
    """A new job id, e.g. ``job_01j9zk3q8m6v0c2x7d4f5g6h7j``."""
    return f"job_{_ulid(now_ms)}"


def new_batch_id() -> str:
    """A new batch id, e.g. ``bat_01j9zk3q8m6v0c2x7d4f5g6h7j``."""
    return f"bat_{_ulid()}"


def new_asset_id() -> str:
    """A new asset (upload) id."""
    return f"ast_{_ulid()}"


def new_key_id() -> str:
    """A new API key id (the public half; the secret is separate)."""
    return f"key_{_ulid()}"


def new_request_id() -> str:
    """A new request id, echoed in every error body and the X-Request-ID header."""
    return f"req_{_ulid()}"


def id_timestamp_ms(identifier: str) -> int:
    """The creation time (epoch ms) encoded in an id made by this module."""
    raw = identifier.split("_", 1)[-1][:10]
    value = 0
    for char in raw:
        value = value * 32 + _ALPHABET.index(char)
    return value
