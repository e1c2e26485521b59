"""Receiving an upload: multipart parsed as it arrives and streamed into S3.

The request body is never held whole, nor spooled to disk: the multipart parser hands the
``file`` part's bytes over as they arrive; the first 64 KiB are sniffed (and checked against the
part's declared type) before the upload to ``inputs/<owner>/<asset_id>.<ext>`` starts, and the
rest follows through ``ObjectStore.put_stream`` with the size limit enforced on the way. The
bytes are hashed (blake3) as they pass. Small text fields sent before the file (the Comfy API
v2's ``content_type``, ``file_path``, ``expected_hash``, ``tags``) are kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import quote

from blake3 import blake3
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from comfyline.contracts import ErrorCode, new_asset_id
from comfyline.runtime import ObjectStore

from .errors import ApiError
from .media import SNIFF_BYTES, Media, check
from .objects import upload_key

FILE_FIELD = "file"
MAX_FIELD_BYTES = 4096
MAX_FIELDS = 32


@dataclass(frozen=True, slots=True)
class StoredAsset:
    """An upload as stored."""

    asset_id: str
    key: str
    size: int
    media: Media
    filename: str | None
    blake3: str  # ``blake3:<hex>`` of the bytes stored
    fields: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str | None = None
    filename: str | None = None
    content_type: str | None = None
    data: bytearray = field(default_factory=bytearray)


class _FileStream:
    """Feeds the multipart parser from the request and yields the ``file`` part's bytes."""

    def __init__(self, request: Request, boundary: bytes) -> None:
        self.body = request.stream()
        self.part = _Part()
        self.file: _Part | None = None
        self.done = False
        self.out: list[bytes] = []
        self.fields: dict[str, list[str]] = {}
        self._field_count = 0
        self._header_name = b""
        self._header_value = b""
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_part_data": self._data,
                "on_part_end": self._end,
                "on_header_field": self._field,
                "on_header_value": self._value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done,
            },
        )

    def _begin(self) -> None:
        self.part = _Part()

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self.part.headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        name, filename = options.get(b"name"), options.get(b"filename")
        self.part.name = name.decode("utf-8", "replace") if name else None
        self.part.filename = filename.decode("utf-8", "replace") if filename else None
        ctype = self.part.headers.get(b"content-type")
        self.part.content_type = ctype.decode("latin-1") if ctype else None
        if self.file is None and self.part.name == FILE_FIELD:
            self.file = self.part

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.file is self.part and not self.done:
            self.out.append(data[start:end])
        elif self.file is None and self.part.name and self.part.filename is None:
            self.part.data += data[start:end]
            if len(self.part.data) > MAX_FIELD_BYTES:
                raise ApiError(
                    422,
                    ErrorCode.VALIDATION_ERROR,
                    f"multipart field {self.part.name!r} is longer than {MAX_FIELD_BYTES} bytes",
                    details={"errors": [{"field": self.part.name, "message": "too long"}]},
                )

    def _end(self) -> None:
        if self.file is self.part:
            self.done = True
        elif self.file is None and self.part.name and self.part.filename is None:
            self._field_count += 1
            if self._field_count > MAX_FIELDS:
                raise ApiError(
                    422, ErrorCode.VALIDATION_ERROR, f"more than {MAX_FIELDS} multipart fields"
                )
            value = self.part.data.decode("utf-8", "replace")
            self.fields.setdefault(self.part.name, []).append(value)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file part's bytes, as they arrive."""
        try:
            async for chunk in self.body:
                self.parser.write(chunk)
                while self.out:
                    yield self.out.pop(0)
                if self.done:
                    return
            self.parser.finalize()
        except FormParserError as exc:
            raise ApiError(
                400, ErrorCode.VALIDATION_ERROR, f"malformed multipart body: {exc}"
            ) from exc
        except ClientDisconnect as exc:
            raise ApiError(400, ErrorCode.VALIDATION_ERROR, "the client went away") from exc
        while self.out:
            yield self.out.pop(0)
        if self.file is None:
            raise ApiError(
                422,
                ErrorCode.VALIDATION_ERROR,
                f"multipart field {FILE_FIELD!r} (a file) is required",
                details={"errors": [{"field": FILE_FIELD, "message": "required"}]},
            )


async def store_upload(
    request: Request, store: ObjectStore, owner: str, max_bytes: int
) -> StoredAsset:
    """Stream the request's ``file`` part into storage as a new asset of ``owner``."""
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ApiError(
            415,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "send the file as multipart/form-data with a 'file' field",
        )
    stream = _FileStream(request, boundary)
    source = stream.chunks()
    head = b""
    async for chunk in source:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    if len(head) > max_bytes:
        raise _too_large(max_bytes)
    if not head:
        raise ApiError(
            422,
            ErrorCode.VALIDATION_ERROR,
            "the file is empty",
            details={"errors": [{"field": FILE_FIELD, "message": "empty file"}]},
        )
    assert stream.file is not None
    media = check(head, stream.file.content_type)
    asset_id = new_asset_id()
    key = upload_key(owner, asset_id, media.content_type)
    metadata = {"owner": owner, "asset-id": asset_id, "kind": media.kind}
    if stream.file.filename:
        metadata["filename"] = quote(stream.file.filename[:200])
    if media.width and media.height:
        metadata["width"], metadata["height"] = str(media.width), str(media.height)

    hasher = blake3(head)

    async def everything() -> AsyncIterator[bytes]:
        yield head
        async for chunk in source:
            hasher.update(chunk)
            yield chunk

    try:
        size = await store.put_stream(key, everything(), media.content_type, metadata, max_bytes)
    except ValueError as exc:
        raise _too_large(max_bytes) from exc
    digest = f"blake3:{hasher.hexdigest()}"
    return StoredAsset(asset_id, key, size, media, stream.file.filename, digest, stream.fields)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"the file is larger than {limit} bytes",
        details={"limit_bytes": limit},
    )
