"""``/v1/assets``: uploads (streamed to S3, sniffed, size-limited) and the caller's gallery."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import unquote

from fastapi import APIRouter, Query, Request, Response

from comfyline.contracts import owner_token
from comfyline.runtime import ObjectNotFound

from ..deps import Gateway, GatewayDep, StatusUser, UploadUser, owner_param
from ..errors import error_responses, not_found
from ..hashes import Uploads
from ..media import canonical
from ..objects import ASSET_ID, Listed, find_upload, list_prefix
from ..schemas import AssetList, AssetPublic, SignedLink, SignRequest
from ..uploads import store_upload

router = APIRouter(prefix="/v1/assets", tags=["assets"])
_OUTPUT_KEY = re.compile(r"^outputs/[^/]+/(job_[0-9a-z]{26})/(\d+)\.\w+$")
_KINDS = {"image", "audio", "video"}
_BY_ID = {"asset_id": "$response.body#/id"}
ASSET_LINKS = {
    "GetAsset": {"operationId": "get_asset", "parameters": _BY_ID},
    "SignAsset": {"operationId": "sign_asset", "parameters": _BY_ID},
    "DeleteAsset": {"operationId": "delete_asset", "parameters": _BY_ID},
}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                },
                "encoding": {"file": {"contentType": "image/*, audio/*, video/*"}},
            }
        },
    }
}


def _link(gw: Gateway, key: str, expires_s: int | None = None) -> tuple[str, datetime]:
    seconds = expires_s or gw.settings.s3.link_expiry_s
    url = gw.store.presign_get(key, seconds, filename=key.rsplit("/", 1)[-1])
    return url, datetime.now(UTC) + timedelta(seconds=seconds)


def _asset(gw: Gateway, item: Listed, meta: dict[str, str] | None = None) -> AssetPublic:
    url, expires = _link(gw, item.key)
    ctype = canonical(item.content_type) or item.content_type
    kind = ctype.split("/", 1)[0]
    meta = meta or {}
    output = _OUTPUT_KEY.match(item.key)
    return AssetPublic(
        id=None if output else item.key.rsplit("/", 1)[-1].split(".", 1)[0],
        source="output" if output else "upload",
        job_id=output.group(1) if output else None,
        output=int(output.group(2)) if output else None,
        kind=kind if kind in _KINDS else "file",
        content_type=ctype,
        size=item.size,
        width=int(meta["width"]) if meta.get("width", "").isdigit() else None,
        height=int(meta["height"]) if meta.get("height", "").isdigit() else None,
        filename=unquote(meta["filename"]) if meta.get("filename") else None,
        created_at=item.last_modified,
        url=url,
        url_expires_at=expires,
    )


async def _find(gw: Gateway, owner: str, asset_id: str) -> Listed:
    found = await find_upload(gw.store, owner, asset_id) if ASSET_ID.match(asset_id) else None
    if found is None:
        raise not_found("asset", asset_id=asset_id[:64])
    return found


@router.post(
    "",
    status_code=201,
    summary="Upload an image, audio or video file",
    openapi_extra=UPLOAD_BODY,
    responses={
        201: {"description": "Stored", "links": ASSET_LINKS},
        **error_responses(400, 401, 413, 415, 422, 429, 503),
    },
)
async def upload(request: Request, user: UploadUser, gw: GatewayDep) -> AssetPublic:
    """Stream a `multipart/form-data` `file` into storage; its type is sniffed and must match
    what the part declares. Reference it in a job's input by its `id`."""
    stored = await store_upload(request, gw.store, user.owner, gw.settings.bodies.max_upload_bytes)
    await Uploads(gw.store).register(user.owner, stored)  # found by its hash on /api/v2 too
    item = Listed(stored.key, stored.size, datetime.now(UTC))
    meta = {"filename": stored.filename or ""}
    if stored.media.width and stored.media.height:
        meta |= {"width": str(stored.media.width), "height": str(stored.media.height)}
    view = _asset(gw, item, meta)
    return view.model_copy(
        update={"filename": stored.filename, "content_type": stored.media.content_type}
    )


@router.get("", summary="The caller's gallery", responses=error_responses(401, 403, 422, 429, 503))
async def list_assets(
    user: StatusUser,
    gw: GatewayDep,
    source: Literal["all", "upload", "output"] = "all",
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    owner: Annotated[str | None, Query(max_length=256, description="admins: any owner")] = None,
) -> AssetList:
    """Uploads, then outputs, oldest first within each, with fresh links."""
    who = owner_token(owner_param(user, owner))
    prefixes = [(p, f"{p}/{who}/") for p in ("inputs", "outputs")]
    if source != "all":
        prefixes = [prefixes[0] if source == "upload" else prefixes[1]]
    after = cursor if cursor and any(cursor.startswith(p) for _, p in prefixes) else None
    items: list[Listed] = []
    for _, prefix in prefixes:
        if after and not after.startswith(prefix) and after > prefix:
            continue  # the cursor is past this prefix
        start = after if after and after.startswith(prefix) else None
        items += await list_prefix(gw.store, prefix, start, limit + 1 - len(items))
        if len(items) > limit:
            break
    has_more = len(items) > limit
    items = items[:limit]
    return AssetList(
        data=[_asset(gw, i) for i in items],
        next_cursor=items[-1].key if has_more and items else None,
        has_more=has_more,
    )


@router.get("/{asset_id}", summary="One upload", responses=error_responses(401, 404, 429, 503))
async def get_asset(asset_id: str, user: StatusUser, gw: GatewayDep) -> AssetPublic:
    """An upload of the caller's, with a fresh link."""
    item = await _find(gw, user.owner, asset_id)
    try:
        info = await gw.store.stat(item.key)
    except ObjectNotFound as exc:
        raise not_found("asset") from exc
    return _asset(gw, item, info.metadata)


@router.post(
    "/{asset_id}/sign",
    summary="A fresh link to an upload",
    responses=error_responses(401, 404, 422, 429, 503),
)
async def sign_asset(
    asset_id: str, user: StatusUser, gw: GatewayDep, body: SignRequest | None = None
) -> SignedLink:
    """A presigned GET link lasting `expires_s` (default 15 minutes)."""
    item = await _find(gw, user.owner, asset_id)
    url, expires = _link(gw, item.key, (body or SignRequest()).expires_s)
    return SignedLink(url=url, expires_at=expires)


@router.delete(
    "/{asset_id}",
    status_code=204,
    summary="Delete an upload",
    response_class=Response,
    responses=error_responses(401, 404, 429, 503),
)
async def delete_asset(asset_id: str, user: StatusUser, gw: GatewayDep) -> Response:
    """Remove an upload of the caller's."""
    uploads = Uploads(gw.store)
    upload = await uploads.get(user.owner, asset_id)
    if upload is None:
        raise not_found("asset", asset_id=asset_id[:64])
    await uploads.delete(user.owner, upload)
    return Response(status_code=204)
