"""Publishing a workflow as a catalogue model: a typed endpoint without a redeploy.

An admin sends an API-format graph, a JSON Schema of the parameters, and bindings (which
parameter goes to which node input). The graph is rendered with the parameters' defaults and
checked against the live fleet (as a workflow job would be: ComfyUI's ``node_errors`` on 422, the
missing classes and files on 503), then written to the ``models`` bucket as the next version of
the model. Every service's live catalogue picks it up; earlier versions stay in the bucket, so
jobs validated against them still run.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator, SchemaError

from comfyline.catalogue import TemplateError, UnknownModel, render
from comfyline.contracts import ErrorCode, ModelTemplate
from comfyline.runtime import Bus, LiveCatalogue

from .errors import ApiError
from .kv import nats_errors
from .schemas import ModelPublish
from .workflows import WORKFLOW_MODEL, Workflows, required_models

#: The file name an asset parameter stands for while a published graph is checked.
STAND_IN = "input.png"


def _invalid(message: str, **details: Any) -> ApiError:
    return ApiError(422, ErrorCode.VALIDATION_ERROR, message, details=details)


class Publisher:
    """Writes checked workflow models to the ``models`` bucket."""

    def __init__(self, bus: Bus, registry: LiveCatalogue, workflows: Workflows) -> None:
        self.bus = bus
        self.registry = registry
        self.workflows = workflows

    async def publish(self, body: ModelPublish) -> ModelTemplate:
        """The model as published (its version one above the latest, or 1)."""
        if body.name.startswith(WORKFLOW_MODEL):
            raise _invalid(f"model names starting with {WORKFLOW_MODEL!r} are reserved")
        try:
            Draft202012Validator.check_schema(body.parameters)
        except SchemaError as exc:
            raise _invalid(f"parameters is not a JSON Schema: {exc.message}") from exc
        if body.parameters.get("type") != "object":
            raise _invalid('parameters must be a JSON Schema with "type": "object"')
        properties = body.parameters.get("properties") or {}
        for binding in body.bindings:
            if binding.param not in properties:
                raise _invalid(
                    f"binding names parameter {binding.param!r}, which parameters lacks",
                    param=binding.param,
                )
            if binding.node not in body.workflow:
                raise _invalid(
                    f"binding names node {binding.node!r}, which the workflow lacks",
                    node=binding.node,
                )
        try:
            latest = self.registry.get(body.name)
        except UnknownModel:
            latest = None
        if latest is not None and latest.engine != "comfyui":
            raise ApiError(
                409, ErrorCode.VALIDATION_ERROR, f"{body.name} is not a ComfyUI graph model"
            )
        draft = ModelTemplate(
            name=body.name,
            version=(latest.version + 1) if latest else 1,
            kind=body.kind,
            title=body.title,
            description=body.description,
            graph=body.workflow,
            parameters=body.parameters,
            bindings=body.bindings,
            cost_per_gpu_second=body.cost_per_gpu_second,
            max_queue=body.max_queue,
            enhance=False,
        )
        defaults = {
            name: spec["default"]
            for name, spec in properties.items()
            if isinstance(spec, dict) and "default" in spec
        }
        try:
            # An asset parameter is a file staged for each job: a stand-in name is checked.
            staged = {b.param: STAND_IN for b in body.bindings if b.transform == "asset"}
            graph = render(draft, defaults, staged)
        except TemplateError as exc:
            raise _invalid(f"the workflow cannot be rendered: {exc.message}") from exc
        checked = await self.workflows.check(graph, frozenset({STAND_IN}))
        template = draft.model_copy(
            update={
                "outputs": checked.outputs,
                "required_nodes": sorted(checked.needs.nodes),
                "required_models": required_models(checked.needs),
            }
        )
        await self._write(template)
        await self.registry.refresh()
        return self.registry.get(template.name, template.version)

    async def _write(self, template: ModelTemplate) -> None:
        """Add the version to the model's bucket entry (a JSON list of its versions)."""
        kv = await self.bus.kv(self.bus.names.bucket("models"))
        async with nats_errors("publishing the model"):
            try:
                entry = await kv.get(template.name)
                raw = entry.value or b"[]"
            except Exception:  # no entry yet
                raw = b"[]"
            try:
                found = json.loads(raw)
            except ValueError:
                found = []
            versions = found if isinstance(found, list) else [found]
            versions = [v for v in versions if v.get("version") != template.version]
            versions.append(template.model_dump(mode="json"))
            await kv.put(template.name, json.dumps(versions).encode())
