"""Presigned GET links made with the day's signing key kept.

Every answer that shows an output carries a fresh presigned link, so a link is made on the
path of each ``Prefer: wait`` answer and each event with outputs. The S3 client's own presign
derives the signing key (four HMACs) and rebuilds and re-parses the URL on every call; this
signer writes the same link (AWS Signature V4, query-signed, ``UNSIGNED-PAYLOAD``, the one
``host`` header) with the key derived once a day. It serves a path-style endpoint
(``scheme://host/bucket/key``, MinIO and SeaweedFS); :meth:`LinkSigner.probe` declines any other,
and the S3 client presigns those itself.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

_ALGORITHM = "AWS4-HMAC-SHA256"


def _encode(value: str, safe: str = "") -> str:
    return quote(value, safe=safe).replace("%7E", "~")


class LinkSigner:
    """Presigned GET links for one bucket on one path-style endpoint."""

    def __init__(
        self, scheme: str, netloc: str, bucket: str, region: str, access_key: str, secret_key: str
    ) -> None:
        self.origin = f"{scheme}://{netloc}"
        self.netloc = netloc
        self.bucket = bucket
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key
        self._day = ""
        self._key = b""

    @classmethod
    def probe(
        cls, sample: str, bucket: str, region: str, access_key: str, secret_key: str
    ) -> LinkSigner | None:
        """The signer for the endpoint of ``sample`` (a link the S3 client presigned for
        ``<bucket>/probe``), or None when that endpoint is not path-style."""
        url = urlsplit(sample)
        if url.path != f"/{_encode(bucket)}/probe" or not url.netloc:
            return None
        return cls(url.scheme, url.netloc, bucket, region, access_key, secret_key)

    def signing_key(self, day: str) -> bytes:
        if day != self._day:
            key = ("AWS4" + self.secret_key).encode()
            for part in (day, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._day, self._key = day, key
        return self._key

    def get(
        self,
        key: str,
        expires_s: int,
        params: dict[str, str] | None = None,
        now: datetime | None = None,
    ) -> str:
        """A link to GET ``key`` for ``expires_s`` seconds; ``params`` are response overrides
        (``response-content-disposition``...), signed with the link."""
        if not 1 <= expires_s <= 604800:
            raise ValueError("a link lasts from 1 second to 7 days")
        at = (now or datetime.now(UTC)).astimezone(UTC)
        day = at.strftime("%Y%m%d")
        stamp = at.strftime("%Y%m%dT%H%M%SZ")
        scope = f"{day}/{self.region}/s3/aws4_request"
        path = f"/{self.bucket}/{_encode(key, '/')}"
        pairs = [(_encode(name), _encode(value)) for name, value in sorted((params or {}).items())]
        pairs += [
            ("X-Amz-Algorithm", _ALGORITHM),
            ("X-Amz-Credential", _encode(f"{self.access_key}/{scope}")),
            ("X-Amz-Date", stamp),
            ("X-Amz-Expires", str(expires_s)),
            ("X-Amz-SignedHeaders", "host"),
        ]
        query = "&".join(f"{name}={value}" for name, value in pairs)
        canonical = "&".join(f"{name}={value}" for name, value in sorted(pairs))
        request = f"GET\n{path}\n{canonical}\nhost:{self.netloc}\n\nhost\nUNSIGNED-PAYLOAD"
        digest = hashlib.sha256(request.encode()).hexdigest()
        to_sign = f"{_ALGORITHM}\n{stamp}\n{scope}\n{digest}"
        signature = hmac.new(self.signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{self.origin}{path}?{query}&X-Amz-Signature={signature}"
