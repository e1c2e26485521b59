"""``/v1/keys``: API keys (users their own, admins anyone's) and the webhook signing secret."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from comfyline.contracts import TIER_ORDER, ErrorCode

from ..deps import GatewayDep, KeysUser, owner_param
from ..errors import ApiError, error_responses
from ..schemas import (
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyPublic,
    WebhookSecretCreated,
    WebhookSecretInfo,
)

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post(
    "",
    status_code=201,
    summary="Create an API key",
    responses=error_responses(401, 403, 422, 429, 503),
)
async def create_key(body: KeyCreate, user: KeysUser, gw: GatewayDep) -> KeyCreated:
    """A new key; its secret is in this answer only. Users make keys for themselves, with their
    own role and tier; admins may set `owner`, `role`, `content_tier` and `limits`."""
    owner = owner_param(user, body.owner)
    if not user.is_admin:
        if (
            body.role == "admin"
            or body.limits
            or (body.lane and body.lane != user.lane)
            or body.scopes
        ):
            raise ApiError(
                403, ErrorCode.FORBIDDEN, "only admins set roles, limits, lanes and scopes"
            )
        wanted = body.content_tier or user.content_tier
        if TIER_ORDER.index(wanted) > TIER_ORDER.index(user.content_tier):
            raise ApiError(403, ErrorCode.FORBIDDEN, "a key cannot exceed your own content tier")
        limits = dict(user.limits)  # a user's new key keeps the limits they were given
    else:
        limits = dict(body.limits)
    secret, record = await gw.keys.create(
        owner,
        role=body.role,
        name=body.name,
        content_tier=body.content_tier
        or (user.content_tier if owner == user.owner_id else "general"),
        limits=limits,
        lane=body.lane if user.is_admin else user.lane,
        scopes=body.scopes,
    )
    return KeyCreated(key=KeyPublic.of(record), secret=secret)


@router.get("", summary="List API keys", responses=error_responses(401, 403, 429, 503))
async def list_keys(
    user: KeysUser,
    gw: GatewayDep,
    owner: Annotated[
        str | None, Query(max_length=256, description="admins: any owner, or *")
    ] = None,
) -> KeyList:
    """The caller's keys (admins: `?owner=`, or `*` for every key)."""
    if owner == "*" and user.is_admin:
        records = await gw.keys.list(None)
    else:
        records = await gw.keys.list(owner_param(user, owner))
    return KeyList(data=[KeyPublic.of(r) for r in records])


@router.delete(
    "/{key_id}", summary="Revoke an API key", responses=error_responses(401, 404, 429, 503)
)
async def revoke_key(key_id: str, user: KeysUser, gw: GatewayDep) -> KeyPublic:
    """Revoke a key of the caller's (admins: anyone's); it stops working at once."""
    record = await gw.keys.revoke(key_id, None if user.is_admin else user.owner_id)
    return KeyPublic.of(record)


@router.post(
    "/webhook-secret",
    status_code=201,
    summary="Rotate the webhook signing secret",
    responses=error_responses(401, 403, 429, 503),
)
async def rotate_webhook_secret(
    user: KeysUser,
    gw: GatewayDep,
    owner: Annotated[str | None, Query(max_length=256, description="admins: any owner")] = None,
) -> WebhookSecretCreated:
    """A new secret that signs the owner's webhooks from now on; shown this once."""
    record = await gw.keys.rotate_webhook_secret(owner_param(user, owner))
    return WebhookSecretCreated(secret=record.secret, created_at=record.created_at)


@router.get(
    "/webhook-secret",
    summary="Whether a webhook secret is set",
    responses=error_responses(401, 403, 429, 503),
)
async def webhook_secret_info(
    user: KeysUser,
    gw: GatewayDep,
    owner: Annotated[str | None, Query(max_length=256, description="admins: any owner")] = None,
) -> WebhookSecretInfo:
    """When the current secret was made (never the secret)."""
    record = await gw.keys.webhook_secret(owner_param(user, owner))
    return WebhookSecretInfo(
        exists=record is not None, created_at=record.created_at if record else None
    )
