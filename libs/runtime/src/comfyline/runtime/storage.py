"""Object storage on any S3-compatible server (MinIO in production, SeaweedFS locally).

The ``minio`` client is synchronous, so its calls run in a thread. Uploads stream: an async
source of chunks feeds a multipart upload through a small bounded queue, so memory stays flat
whatever the object's size. An object that fits in one part (most outputs: an image, a clip) is
sent instead as one PUT made on the event loop (on a kept :class:`~.http.Origin` connection),
signed exactly as the client signs it: no thread hand-over, whose wait for the interpreter lock
on a busy worker cost more than the upload.
Links are presigned against the public endpoint clients can reach.
"""

from __future__ import annotations

import asyncio
import io
import queue
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import urllib3
from minio import Minio
from minio.commonconfig import Filter
from minio.error import S3Error
from minio.helpers import genheaders
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from minio.signer import sign_v4_s3
from opentelemetry.trace import SpanKind

from comfyline.contracts import ComfylineError, ErrorCode

from .http import Origin
from .links import LinkSigner
from .metrics import S3_BYTES, S3_ERRORS
from .settings import S3Settings
from .tracing import span, tracer

_tracer = tracer(__name__)

#: Answers worth a second try for a PUT made on the event loop (as the threaded client retries).
_RETRY_STATUS = frozenset({500, 502, 503})
_PUT_ATTEMPTS = 4


class StorageError(ComfylineError):
    """The object store failed or could not be reached (transient)."""

    code = ErrorCode.STORAGE_UNAVAILABLE


class ObjectNotFound(ComfylineError):
    """No object under that key."""

    code = ErrorCode.NOT_FOUND


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What the store knows about one object."""

    key: str
    size: int
    content_type: str
    metadata: dict[str, str]


_END = object()


class _QueueReader(io.RawIOBase):
    """A file-like object whose ``read`` takes chunks handed over by the event loop."""

    def __init__(self, chunks: queue.Queue[Any]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = self._chunks.get()
            if chunk is _END:
                self._done = True
                break
            if isinstance(chunk, BaseException):
                raise chunk
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


async def _hand_over(handoff: queue.Queue[Any], item: Any, upload: asyncio.Task[Any]) -> None:
    """Put ``item`` for the upload thread without taking a thread of our own: with every
    executor thread already inside an upload waiting for its next item, a blocking ``put`` sent
    to the same executor would never run, and those uploads would wait forever."""
    while not upload.done():
        try:
            handoff.put_nowait(item)
            return
        except queue.Full:
            await asyncio.sleep(0.002)


class ObjectStore:
    """One bucket of an S3-compatible store."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=60.0),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503]),
            maxsize=16,
        )
        self.client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )
        public = settings.public_endpoint or settings.endpoint
        secure = settings.secure if settings.public_secure is None else settings.public_secure
        #: Kept connections for single PUTs, by the scheme and host the S3 client addresses.
        self._origins: dict[tuple[str, str], Origin] = {}
        # Presigning is offline (region given), so this client never connects anywhere.
        self.signer = Minio(
            public,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=secure,
            region=settings.region,
        )
        self.links: LinkSigner | None = None
        if settings.region:  # (without one, the S3 client asks the server for it per link)
            sample = self.signer.presigned_get_object(self.bucket, "probe")
            self.links = LinkSigner.probe(
                sample, self.bucket, settings.region, settings.access_key, settings.secret_key
            )

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        operation = getattr(fn, "__name__", "call")
        attributes = {"rpc.system": "s3", "rpc.method": operation, "s3.bucket": self.bucket}
        if len(args) > 1 and isinstance(args[1], str):
            attributes["s3.key"] = args[1]
        try:
            with span(_tracer, f"s3 {operation}", kind=SpanKind.CLIENT, attributes=attributes):
                return await asyncio.to_thread(fn, *args, **kwargs)
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "NoSuchObject"}:
                raise ObjectNotFound(f"no object {exc.object_name or ''}") from exc
            S3_ERRORS.labels(operation).inc()
            raise StorageError(f"S3 error {exc.code}: {exc.message}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            S3_ERRORS.labels(operation).inc()
            raise StorageError(f"S3 unreachable: {exc}") from exc

    async def ensure_bucket(self, lifecycle_days: dict[str, int] | None = None) -> None:
        """Create the bucket if missing; apply expiry per key prefix (e.g. ``{"inputs/": 30}``)."""
        if not await self._call(self.client.bucket_exists, self.bucket):
            try:
                await self._call(self.client.make_bucket, self.bucket)
            except StorageError:
                if not await self._call(self.client.bucket_exists, self.bucket):
                    raise
        if lifecycle_days:
            rules = [
                Rule(
                    "Enabled",
                    rule_filter=Filter(prefix=prefix),
                    rule_id=f"expire-{prefix.strip('/') or 'all'}",
                    expiration=Expiration(days=days),
                )
                for prefix, days in lifecycle_days.items()
            ]
            await self._call(self.client.set_bucket_lifecycle, self.bucket, LifecycleConfig(rules))

    async def ping(self) -> bool:
        """True when the store answers and the bucket exists."""
        try:
            return bool(await self._call(self.client.bucket_exists, self.bucket))
        except StorageError:
            return False

    async def put_bytes(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> int:
        """Store a small object whole (one PUT on the event loop up to one part's size)."""
        if len(data) <= self.settings.part_size:
            await self._put_whole(key, data, content_type, metadata)
        else:
            await self._call(
                self.client.put_object,
                self.bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata=metadata,
            )
        S3_BYTES.labels("upload").inc(len(data))
        return len(data)

    async def close(self) -> None:
        """Close the connections of the PUTs made on the event loop (the service stops)."""
        for origin in self._origins.values():
            await origin.close()

    def _origin(self, scheme: str, netloc: str) -> Origin:
        origin = self._origins.get((scheme, netloc))
        if origin is None:
            origin = self._origins[scheme, netloc] = Origin(
                f"{scheme}://{netloc}", connect_timeout_s=5.0, read_timeout_s=60.0
            )
        return origin

    async def _put_whole(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None
    ) -> None:
        """One ``PutObject`` request made on the event loop, with the URL, headers and SigV4
        signature the ``minio`` client would use; retried like the client's on a connection
        error or a 500/502/503."""
        client = self.client
        url = client._base_url.build(
            method="PUT", region=self.settings.region, bucket_name=self.bucket, object_name=key
        )
        attributes = {
            "rpc.system": "s3",
            "rpc.method": "put_object",
            "s3.bucket": self.bucket,
            "s3.key": key,
        }
        with span(_tracer, "s3 put_object", kind=SpanKind.CLIENT, attributes=attributes):
            for attempt in range(1, _PUT_ATTEMPTS + 1):
                headers = genheaders(dict(metadata or {}), None, None, None, False)
                headers["Content-Type"] = content_type
                creds = client._provider.retrieve() if client._provider else None
                headers, date = client._build_headers(url.netloc, headers, data, creds)
                if creds is not None:
                    headers = sign_v4_s3(
                        method="PUT",
                        url=url,
                        region=self.settings.region,
                        headers=headers,
                        credentials=creds,
                        content_sha256=str(headers.get("x-amz-content-sha256")),
                        date=date,
                    )
                flat = {k: v if isinstance(v, str) else ",".join(v) for k, v in headers.items()}
                try:
                    reply = await self._origin(url.scheme, url.netloc).request(
                        "PUT", url.path + (f"?{url.query}" if url.query else ""), flat, data
                    )
                    body, status = reply.body, reply.status
                except (OSError, TimeoutError) as exc:
                    if attempt == _PUT_ATTEMPTS:
                        S3_ERRORS.labels("put_object").inc()
                        raise StorageError(f"S3 unreachable: {exc}") from exc
                else:
                    if status == 200:
                        return
                    if status not in _RETRY_STATUS or attempt == _PUT_ATTEMPTS:
                        S3_ERRORS.labels("put_object").inc()
                        code = re.search(rb"<Code>([^<]*)</Code>", body)
                        reason = code.group(1).decode() if code else f"HTTP {status}"
                        raise StorageError(f"S3 error {reason} storing {key}")
                await asyncio.sleep(0.2 * 2 ** (attempt - 1))

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Stream chunks into one object (multipart above one part); returns the size.

        At most a few parts are in memory at once. Raises :class:`StorageError` on failure, and
        ``ValueError`` when the stream exceeds ``max_bytes`` (nothing is then left stored).
        """
        head: list[bytes] = []
        size = 0
        source = aiter(chunks)
        async for chunk in source:
            if not chunk:
                continue
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise ValueError(f"object larger than {max_bytes} bytes")
            head.append(chunk)
            if size > self.settings.part_size:
                break
        else:  # all of it fits in one part: one PUT on the event loop
            await self._put_whole(key, b"".join(head), content_type, metadata)
            S3_BYTES.labels("upload").inc(size)
            return size
        return await self._put_parts(key, head, source, content_type, metadata, max_bytes)

    async def _put_parts(
        self,
        key: str,
        head: list[bytes],
        rest: AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str] | None,
        max_bytes: int | None,
    ) -> int:
        """A multipart upload by the threaded client, fed ``head`` and then ``rest``."""

        async def chunks() -> AsyncIterator[bytes]:
            head.reverse()
            while head:  # each handed over is let go: the first part is not held to the end
                yield head.pop()
            async for chunk in rest:
                yield chunk

        handoff: queue.Queue[Any] = queue.Queue(maxsize=8)
        reader = _QueueReader(handoff)
        upload = asyncio.create_task(
            self._call(
                self.client.put_object,
                self.bucket,
                key,
                reader,
                -1,
                content_type=content_type,
                metadata=metadata,
                part_size=self.settings.part_size,
            )
        )
        size = 0
        try:
            async for chunk in chunks():
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise ValueError(f"object larger than {max_bytes} bytes")
                await _hand_over(handoff, chunk, upload)
                if upload.done():
                    break
            await _hand_over(handoff, _END, upload)
        except BaseException as exc:
            await _hand_over(handoff, exc if isinstance(exc, Exception) else _END, upload)
            try:
                await upload
            except Exception:
                pass
            raise
        await upload
        S3_BYTES.labels("upload").inc(size)
        return size

    async def stat(self, key: str) -> ObjectInfo:
        """Size, type and metadata of one object."""
        stat = await self._call(self.client.stat_object, self.bucket, key)
        meta = {k.lower().removeprefix("x-amz-meta-"): v for k, v in (stat.metadata or {}).items()}
        return ObjectInfo(
            key=key,
            size=int(stat.size or 0),
            content_type=stat.content_type or "application/octet-stream",
            metadata=meta,
        )

    async def get_bytes(self, key: str) -> bytes:
        """A small object, whole."""

        def read() -> bytes:
            response = self.client.get_object(self.bucket, key)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        data: bytes = await self._call(read)
        S3_BYTES.labels("download").inc(len(data))
        return data

    async def iter_object(
        self, key: str, chunk_size: int = 256 * 1024, offset: int = 0, length: int = 0
    ) -> AsyncIterator[bytes]:
        """Stream an object's bytes without holding it whole (``length`` bytes from ``offset``;
        0: to the end)."""
        response = await self._call(
            self.client.get_object, self.bucket, key, offset=offset, length=length
        )
        stream: Iterator[bytes] = response.stream(chunk_size)
        try:
            while True:
                chunk = await asyncio.to_thread(next, stream, b"")
                S3_BYTES.labels("download").inc(len(chunk))
                if not chunk:
                    break
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def delete(self, key: str) -> None:
        """Remove one object (missing is fine)."""
        await self._call(self.client.remove_object, self.bucket, key)

    def presign_get(
        self, key: str, expires_s: int | None = None, filename: str | None = None
    ) -> str:
        """A presigned GET link on the public endpoint (no network call)."""
        params: dict[str, str] | None = None
        if filename:
            params = {"response-content-disposition": f'inline; filename="{filename}"'}
        if self.links is not None:
            return self.links.get(key, expires_s or self.settings.link_expiry_s, params)
        return str(
            self.signer.presigned_get_object(
                self.bucket,
                key,
                expires=timedelta(seconds=expires_s or self.settings.link_expiry_s),
                response_headers=dict(params) if params else None,
            )
        )

    def presign_put(self, key: str, expires_s: int | None = None) -> str:
        """A presigned PUT link on the public endpoint (direct uploads)."""
        return str(
            self.signer.presigned_put_object(
                self.bucket,
                key,
                expires=timedelta(seconds=expires_s or self.settings.link_expiry_s),
            )
        )
