"""``/v1/prompts/enhance``: the prompt-enhancer through the gateway, for a client's preview."""

from __future__ import annotations

from fastapi import APIRouter

from comfyline.catalogue import UnknownModel
from comfyline.contracts import EnhanceRequest

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
    return EnhancePublic(enhancement=await gw.job_service.enhance(request))
