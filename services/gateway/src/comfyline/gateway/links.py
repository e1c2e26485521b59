"""Links to outputs: to the gateway itself while an output is fresh, to S3 after.

A worker keeps a small output in JetStream's ``OUTPUTS`` stream for a few minutes (see
comfyline.runtime.fresh) and says until when in the output's ``fresh_until``. Until then its
link is ``/v1/files/<key>?expires=<unix time>&signature=<HMAC>``, signed with a secret every
replica derives from the events-token secret: like a presigned S3 link it needs no API key, so a
browser can put it in an ``<img>``, and it lasts as long. The route answers from the stream, and
with a ``307`` to a presigned S3 link once the output has left it (the archiver copied it there
within moments of the job's end). Any other output is linked to S3 directly, as before.

A client that waited for its job's end (``Prefer: wait``) downloads the outputs next, as a web
app showing the result does: when the gateway answers it, it reads the fresh outputs from the
stream beside the answer (:meth:`OutputLinks.warm`), so the download that follows finds them in
memory instead of waiting for a read of its own. What was read ahead is kept for
:data:`WARM_S` or until its first download, within :data:`WARM_BYTES`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from comfyline.contracts import ErrorCode, OutputRef
from comfyline.runtime import FreshObject, FreshOutputs, ObjectStore, retrieve

from .errors import ApiError

FILES_PATH = "/v1/files"
#: How long an output read ahead for its first download is kept, and the most kept at once.
WARM_S = 10.0
WARM_BYTES = 64 * 1024 * 1024


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OutputLinks:
    """Makes output links, and checks and serves those that point at the gateway."""

    def __init__(
        self, store: ObjectStore, fresh: FreshOutputs | None, events_secret: bytes
    ) -> None:
        self.store = store
        self.fresh = fresh
        self._secret = hmac.digest(events_secret, b"comfyline output links", "sha256")
        #: Outputs read ahead of their first download (see :meth:`warm`), by key.
        self._warm: dict[str, tuple[int, asyncio.Task[FreshObject | None]]] = {}
        self._warm_bytes = 0

    def url(self, ref: OutputRef, base: str | None, seconds: int, filename: str) -> str:
        """A link to ``ref`` lasting ``seconds``: the gateway's while the output is fresh and
        ``base`` (the API's public URL) is known, else a presigned S3 link."""
        if (
            self.fresh is not None
            and base is not None
            and ref.fresh_until is not None
            and ref.fresh_until > datetime.now(UTC)
        ):
            return self.fresh_url(base, ref.key, int(time.time()) + seconds)
        return self.store.presign_get(ref.key, seconds, filename=filename)

    def fresh_url(self, base: str, key: str, expires: int) -> str:
        token = _b64(key.encode())
        signature = self._sign(token, expires)
        return f"{base}{FILES_PATH}/{token}?expires={expires}&signature={signature}"

    def _sign(self, token: str, expires: int) -> str:
        return _b64(hmac.digest(self._secret, f"{token}.{expires}".encode(), "sha256")[:24])

    def check(self, token: str, expires: int, signature: str) -> tuple[str, int]:
        """The object key a link names and the seconds it has left; 403 ``forbidden`` for a
        link this gateway did not sign, or one that expired."""
        expected = self._sign(token, expires).encode()
        if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape")):
            raise ApiError(403, ErrorCode.FORBIDDEN, "the link's signature does not match")
        left = expires - int(time.time())
        if left <= 0:
            raise ApiError(403, ErrorCode.FORBIDDEN, "the link has expired; ask for a fresh one")
        try:
            key = _unb64(token).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:  # signed, so never; all the same
            raise ApiError(403, ErrorCode.FORBIDDEN, "the link names no output") from exc
        return key, left

    async def read(self, key: str) -> FreshObject | None:
        """The output while it is fresh (None once it has left the stream): the one read ahead
        for this download, if any."""
        if self.fresh is None:
            return None
        ahead = self._cool(key)
        if ahead is not None:
            try:
                return await ahead
            except Exception:  # the read ahead failed: read it now
                pass
        return await self.fresh.get(key)

    def warm(self, refs: Iterable[OutputRef]) -> None:
        """Read the fresh ones of ``refs`` from the stream now, for the download that follows
        (see the module); a read already under way, or past :data:`WARM_BYTES`, is left."""
        fresh = self.fresh
        if fresh is None:
            return
        now = datetime.now(UTC)
        for ref in refs:
            if (
                ref.fresh_until is None
                or ref.fresh_until <= now
                or ref.key in self._warm
                or self._warm_bytes + ref.size > WARM_BYTES
            ):
                continue
            task = asyncio.ensure_future(fresh.get(ref.key))
            task.add_done_callback(retrieve)  # (a failed one is read again on download)
            self._warm[ref.key] = (ref.size, task)
            self._warm_bytes += ref.size
            asyncio.get_running_loop().call_later(WARM_S, self._cool, ref.key, task)

    def reading_ahead(self, key: str) -> asyncio.Task[FreshObject | None] | None:
        """The read ahead of ``key`` kept for its download, if any (for tests and status)."""
        held = self._warm.get(key)
        return held[1] if held is not None else None

    def _cool(
        self, key: str, task: asyncio.Task[FreshObject | None] | None = None
    ) -> asyncio.Task[FreshObject | None] | None:
        """Take ``key``'s read ahead out of the cache (only ``task``, when given)."""
        held = self._warm.get(key)
        if held is None or (task is not None and held[1] is not task):
            return None
        del self._warm[key]
        self._warm_bytes -= held[0]
        return held[1]
