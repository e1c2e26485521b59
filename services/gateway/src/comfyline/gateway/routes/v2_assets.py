"""``/api/v2/assets``: the Comfy API v2 asset routes over Comfyline's uploads and job outputs.

An uploaded asset is a Comfyline upload (``ast_...``, the same as ``/v1/assets``), content
addressed by its blake3 per owner (hashes.py). A job output is an asset too, with the id
``<job_id>.<index>``. Content is served here, with HTTP ``Range``. What differs from the
contract, and why: docs/api-v2.md.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from comfyline.contracts import ErrorCode, JobRecord, OutputRef
from comfyline.runtime import ObjectNotFound

from ..auth import Principal
from ..deps import Gateway, GatewayDep, StatusUser, UploadUser
from ..errors import ApiError, not_found
from ..hashes import Upload, Uploads, hex_of
from ..jobs import filename_of
from ..uploads import store_upload

router = APIRouter(prefix="/api/v2", tags=["comfy api v2"], include_in_schema=False)
RETENTION = timedelta(days=7)
LINK_S = 3600
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class FromHash(BaseModel):
    """``POST /api/v2/assets/from-hash``."""

    model_config = ConfigDict(extra="ignore")

    hash: str = Field(max_length=80)
    file_path: str | None = Field(default=None, max_length=1024)
    tags: list[str] = Field(default_factory=list, max_length=32)


def output_id(job_id: str, index: int) -> str:
    """The asset id of a job's output."""
    return f"{job_id}.{index}"


def _expires() -> str:
    """When a link made now expires."""
    return (datetime.now().astimezone() + timedelta(seconds=LINK_S)).isoformat()


def _link(gw: Gateway, key: str, name: str) -> tuple[str, str]:
    return gw.store.presign_get(key, LINK_S, filename=name), _expires()


def upload_view(gw: Gateway, upload: Upload, created_new: bool | None = None) -> dict[str, Any]:
    """An upload in v2's ``Asset`` shape."""
    name = upload.key.rsplit("/", 1)[-1]
    url, url_expires = _link(gw, upload.key, name)
    view: dict[str, Any] = {
        "id": upload.asset_id,
        "hash": upload.hash,
        "size_bytes": upload.size,
        "content_type": upload.content_type,
        "file_path": upload.file_path,
        "created_at": (upload.created_at or datetime.now().astimezone()).isoformat(),
        "url": url,
        "url_expires_at": url_expires,
        "expires_at": None,
        "job_id": None,
        "tags": upload.tags,
    }
    if created_new is not None:
        view["created_new"] = created_new
    return view


def output_view(
    gw: Gateway, record: JobRecord, ref: OutputRef, base: str | None = None
) -> dict[str, Any]:
    """A job output in v2's ``Output`` shape (which is an ``Asset`` too); its link is the
    gateway's while the output is fresh and ``base`` is known (see links.py)."""
    name = ref.filename or filename_of(ref)
    url = gw.views.output_links.url(ref, base, LINK_S, filename_of(ref))
    url_expires = _expires()
    return {
        "node_id": ref.node_id or "",
        "name": name,
        "file_path": name,
        "type": ref.kind.value if ref.kind.value in {"image", "video", "audio"} else "file",
        "content_type": ref.content_type,
        "size_bytes": ref.size,
        "id": output_id(record.id, ref.index),
        "hash": ref.hash,
        "url": url,
        "url_expires_at": url_expires,
        "created_at": (record.finished_at or record.updated_at).isoformat(),
        "expires_at": (record.created_at + RETENTION).isoformat(),
        "job_id": record.id,
    }


async def _upload(gw: Gateway, user: Principal, asset_id: str) -> Upload:
    found = await Uploads(gw.store).get(user.owner, asset_id)
    if found is None:
        raise not_found("asset", id=asset_id[:80])
    return found


async def _output(gw: Gateway, user: Principal, asset_id: str) -> tuple[JobRecord, OutputRef]:
    job_id, _, index = asset_id.rpartition(".")
    if not job_id or not index.isdigit():
        raise not_found("asset", id=asset_id[:80])
    try:
        record = await gw.job_service.load(user, job_id)
    except ApiError as exc:
        raise not_found("asset", id=asset_id[:80]) from exc
    return record, gw.job_service.output(record, int(index))


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0].strip() if values and values[0].strip() else None


@router.post("/assets", status_code=201, summary="Upload an asset (v2)")
async def v2_upload_asset(request: Request, user: UploadUser, gw: GatewayDep) -> JSONResponse:
    """Stream the ``file`` part into storage, hashing it on the way: 201 with a new asset, or
    200 with the caller's asset that already holds these bytes (the new copy is dropped)."""
    stored = await store_upload(request, gw.store, user.owner, gw.settings.bodies.max_upload_bytes)
    uploads = Uploads(gw.store)
    expected = _first(stored.fields, "expected_hash")
    if expected is not None and expected.lower() != stored.blake3:
        await gw.store.delete(stored.key)
        raise ApiError(
            409,
            ErrorCode.HASH_MISMATCH,
            "the bytes received do not have the expected_hash",
            details={"expected_hash": expected[:80], "hash": stored.blake3},
        )
    existing = await uploads.by_hash(user.owner, stored.blake3)
    if existing is not None:
        await gw.store.delete(stored.key)
        return JSONResponse(upload_view(gw, existing, created_new=False), 200)
    tags = [t[:100] for t in stored.fields.get("tags", [])]
    upload = await uploads.register(
        user.owner, stored, file_path=_first(stored.fields, "file_path"), tags=tags
    )
    headers = {"Location": f"{gw.base_url(request)}/api/v2/assets/{upload.asset_id}"}
    return JSONResponse(upload_view(gw, upload, created_new=True), 201, headers=headers)


@router.post("/assets/from-hash", summary="An asset over bytes already stored (v2)")
async def v2_asset_from_hash(body: FromHash, user: StatusUser, gw: GatewayDep) -> JSONResponse:
    """The caller's asset holding the bytes with this hash (200: it is returned as it is);
    404 ``blob_not_found`` when the caller has no such bytes."""
    if hex_of(body.hash) is None:
        raise ApiError(
            422,
            ErrorCode.VALIDATION_ERROR,
            "hash: expected blake3:<64 hex digits>",
            details={"field": "hash"},
        )
    existing = await Uploads(gw.store).by_hash(user.owner, body.hash)
    if existing is None:
        raise ApiError(404, ErrorCode.BLOB_NOT_FOUND, "no stored bytes of yours have this hash")
    return JSONResponse(upload_view(gw, existing, created_new=False), 200)


@router.post("/assets/from-path", summary="An asset from a server path (v2, not served)")
async def v2_asset_from_path(user: StatusUser) -> JSONResponse:
    """501 ``not_implemented``: files reach Comfyline only as uploads."""
    message = "Comfyline has no server paths to read from; upload the file"
    return JSONResponse({"error": {"code": "not_implemented", "message": message}}, 501)


@router.head("/assets/by-hash/{asset_hash}", summary="Whether the caller has these bytes (v2)")
async def v2_asset_by_hash(asset_hash: str, user: StatusUser, gw: GatewayDep) -> Response:
    """200 if the caller has bytes with this hash, 404 otherwise (no body, as for any HEAD)."""
    found = await Uploads(gw.store).by_hash(user.owner, asset_hash)
    return Response(status_code=200 if found is not None else 404)


@router.get("/assets/{asset_id}", summary="An asset (v2)")
async def v2_get_asset(
    asset_id: str, request: Request, user: StatusUser, gw: GatewayDep
) -> dict[str, Any]:
    """An upload or a job output, with a fresh link."""
    if asset_id.startswith("job_"):
        record, ref = await _output(gw, user, asset_id)
        return output_view(gw, record, ref, gw.base_url(request))
    return upload_view(gw, await _upload(gw, user, asset_id))


@router.delete("/assets/{asset_id}", status_code=204, summary="Delete an asset (v2)")
async def v2_delete_asset(asset_id: str, user: StatusUser, gw: GatewayDep) -> Response:
    """Remove an upload of the caller's (a job's outputs go with the job's retention)."""
    if asset_id.startswith("job_"):
        await _output(gw, user, asset_id)
        raise ApiError(
            403,
            ErrorCode.FORBIDDEN,
            "a job's outputs are kept for the job's retention and cannot be deleted one by one",
        )
    await Uploads(gw.store).delete(user.owner, await _upload(gw, user, asset_id))
    return Response(status_code=204)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte a ``Range`` header asks for (None: the whole body); 416 if it
    cannot be satisfied. Several ranges are answered with the whole body."""
    if not header:
        return None
    found = _RANGE.match(header.strip())
    if found is None:
        return None  # not a single byte range: the whole body, as RFC 9110 allows
    start_s, end_s = found.groups()
    if not start_s and not end_s:
        return None
    if not start_s:  # the last N bytes
        length = int(end_s)
        if length == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size - 1
    start = int(start_s)
    end = min(int(end_s), size - 1) if end_s else size - 1
    if start >= size or end < start:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        ErrorCode.VALIDATION_ERROR,
        "the range is outside the content",
        details={"size_bytes": size},
        headers={"Content-Range": f"bytes */{size}"},
    )


@router.get("/assets/{asset_id}/content", summary="An asset's bytes (v2)")
async def v2_asset_content(
    asset_id: str,
    user: StatusUser,
    gw: GatewayDep,
    range_header: Annotated[str | None, Header(alias="Range", max_length=200)] = None,
) -> Response:
    """The bytes, streamed from storage: 200 whole, or 206 for a single byte ``Range``."""
    if asset_id.startswith("job_"):
        _, ref = await _output(gw, user, asset_id)
        key, size, ctype = ref.key, ref.size, ref.content_type
    else:
        upload = await _upload(gw, user, asset_id)
        key, size, ctype = upload.key, upload.size, upload.content_type
    span = byte_range(range_header, size)
    start, end = span or (0, size - 1)
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start + 1)}
    try:
        chunks = await gw.job_service.object_chunks(key, start, end - start + 1 if span else 0)
    except ObjectNotFound as exc:
        raise not_found("asset", id=asset_id[:80]) from exc
    if span is None:
        return StreamingResponse(chunks, media_type=ctype, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(chunks, 206, media_type=ctype, headers=headers)
