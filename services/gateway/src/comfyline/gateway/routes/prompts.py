"""``/v1/prompts/enhance``: the prompt-enhancer through the gateway, for a client's preview."""

from __future__ import annotations

from fastapi import APIRouter

from comfyline.catalogue import UnknownModel
from comfyline.contracts import EnhanceReply, EnhanceRequest, ErrorCode
from comfyline.runtime import BusError

from ..deps import EnhanceUser, GatewayDep
from ..errors import ApiError, error_responses
from ..schemas import EnhanceCreate, EnhancePublic

router = APIRouter(prefix="/v1/prompts", tags=["prompts"])


@router.post(
    "/enhance",
    summary="Enhance a prompt (preview)",
    responses=error_responses(400, 401, 422, 429, 503, 504),
)
async def enhance(body: EnhanceCreate, user: EnhanceUser, gw: GatewayDep) -> EnhancePublic:
    """What the enhancer would make of a prompt for a model, within its token budget."""
    try:
        template = gw.registry.get(body.model)
    except UnknownModel as exc:
        raise ApiError(422, exc.code, exc.message, details=exc.details) from exc
    request = EnhanceRequest(
        model=template.name,
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        quality=body.quality,
        presets=body.presets,
        enhance=body.enhance,
        use_llm=body.use_llm,
    )
    try:
        reply = await gw.bus.request(
            gw.names.enhance(), request, EnhanceReply, timeout=gw.settings.enhance_timeout_s
        )
    except BusError as exc:
        if exc.code is ErrorCode.TIMEOUT:
            raise ApiError(504, ErrorCode.TIMEOUT, "the enhancer did not answer in time") from exc
        raise ApiError(
            503,
            ErrorCode.ENHANCER_UNAVAILABLE,
            "the enhancer is unavailable",
            headers={"Retry-After": "5"},
        ) from exc
    if not reply.ok or reply.enhancement is None:
        code = _code(reply.code)
        status = 422 if code in {ErrorCode.VALIDATION_ERROR, ErrorCode.CONTENT_POLICY} else 503
        raise ApiError(status, code, reply.error or "the enhancer refused the prompt")
    return EnhancePublic(enhancement=reply.enhancement)


def _code(value: str | None) -> ErrorCode:
    try:
        return ErrorCode(value or "")
    except ValueError:
        return ErrorCode.ENHANCER_UNAVAILABLE
