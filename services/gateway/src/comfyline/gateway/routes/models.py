"""``/v1/models``: the catalogue, with each model's parameters, limits and live availability."""

from __future__ import annotations

from fastapi import APIRouter

from comfyline.catalogue import UnknownModel
from comfyline.contracts import ModelTemplate

from ..deps import AdminUser, GatewayDep, StatusUser
from ..errors import ApiError, error_responses, not_found
from ..fleet import ModelAvailability
from ..schemas import (
    Availability,
    ModelLimits,
    ModelList,
    ModelPublic,
    ModelPublish,
    StepTemplatePublic,
)
from ..submit import MAX_PROMPT_CHARS
from ..workflows import is_workflow_model

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_public(template: ModelTemplate, availability: ModelAvailability) -> ModelPublic:
    """A template as the API shows it (no graph: that is the worker's business)."""
    return ModelPublic(
        name=template.name,
        version=template.version,
        kind=template.kind,
        title=template.title,
        description=template.description,
        parameters=template.parameters,
        outputs=sorted({o.kind.value for o in template.outputs}),
        presets=sorted(template.presets),
        enhance=template.enhance,
        cost_per_gpu_second=template.cost_per_gpu_second,
        limits=ModelLimits(
            max_queue=template.max_queue,
            queue_deadline_s=template.deadlines.queue_s,
            run_deadline_s=template.deadlines.run_s,
            retry_limit=template.retry_limit,
            max_prompt_chars=MAX_PROMPT_CHARS if template.prompt else None,
            prompt_budget_tokens=template.prompt.budget_tokens if template.prompt else None,
        ),
        availability=Availability.model_validate(availability, from_attributes=True),
        engine=template.engine,
        provider=template.provider.provider if template.provider else None,
        steps=[
            StepTemplatePublic(name=s.name, model=s.model, input=s.input) for s in template.steps
        ],
    )


@router.get("", summary="List models", responses=error_responses(401, 429, 503))
async def list_models(user: StatusUser, gw: GatewayDep) -> ModelList:
    """Every model, its parameter schema, limits and availability."""
    templates = [t for t in gw.registry if not is_workflow_model(t)]
    available = await gw.fleet.for_templates(templates)
    return ModelList(data=[model_public(t, available[t.name]) for t in templates])


@router.post(
    "",
    status_code=201,
    summary="Publish a workflow as a model (admins)",
    responses=error_responses(401, 403, 409, 422, 503),
)
async def publish_model(body: ModelPublish, user: AdminUser, gw: GatewayDep) -> ModelPublic:
    """Publish an API-format graph with a JSON Schema of its parameters and the bindings of
    parameters to node inputs, as the next version of the model `name` (1 if new). The graph,
    rendered with the parameters' defaults, is checked against the live fleet first (422
    `invalid_workflow` with ComfyUI's `node_errors`, 503 `workflow_unservable` naming what is
    missing). Every service serves it within the catalogue refresh, without a redeploy."""
    template = await gw.publisher.publish(body)
    available = await gw.fleet.for_templates([template])
    return model_public(template, available[template.name])


@router.get("/{name}", summary="One model", responses=error_responses(401, 404, 429, 503))
async def get_model(name: str, user: StatusUser, gw: GatewayDep) -> ModelPublic:
    """One model, its parameter schema, limits and availability."""
    try:
        template = gw.registry.get(name)
    except UnknownModel as exc:
        raise ApiError(404, exc.code, exc.message, details=exc.details) from exc
    if is_workflow_model(template):
        raise not_found("model", model=name)
    available = await gw.fleet.for_templates([template])
    return model_public(template, available[template.name])
