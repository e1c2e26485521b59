"""People's own ComfyUI graphs as jobs: checked against the live fleet, routed by what they need.

A workflow (a ComfyUI API-format graph: node id -> ``{"class_type", "inputs"}``) is checked
before it is queued against the ``/object_info`` of the fleet's live ComfyUI servers (each worker
stores its servers' ``/object_info`` content-addressed in S3 and names the key in its heartbeat):

- a graph that is not API format, has no output node, or has a bad input (a missing required
  input, a link to a missing node or of the wrong type, a number out of range, a value not among
  a combo's options) is refused with ComfyUI's own ``node_errors`` (422 ``invalid_workflow``);
  a file a loader names must be one its server lists, or one of the job's own uploads staged for
  the run (a ``core/ASSET`` reference), so no graph reads a file staged for another job;
- a graph whose node classes or model files no live server has, all of them on one server, is
  refused with 503 ``workflow_unservable`` naming what is missing.

Routing: what a graph needs (its node classes and the model files it names) is a *requirement
set*. Each requirement set is a hidden catalogue model ``workflow-<digest>`` (kind
``workflow``) written to the ``models`` bucket the first time a graph needs it. Workers already
bind a work queue for every catalogue model their servers can run, so a workflow job waits only
in the queue of its requirement set, which only workers able to run it consume: no job waits
behind one that needs other nodes (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from comfyline.catalogue.objectinfo import combo_options
from comfyline.contracts import (
    ErrorCode,
    ModelTemplate,
    OutputKind,
    OutputSpec,
    RequiredModel,
)
from comfyline.runtime import Bus, LiveCatalogue, ObjectStore

from .errors import ApiError
from .fleet import Fleet

#: Combo values that are model files (a server must have them; they route the job).
MODEL_FILE = re.compile(r"\.(safetensors|ckpt|pt|pth|bin|gguf|onnx|sft|pkl)$", re.IGNORECASE)
WORKFLOW_MODEL = "workflow-"
MAX_NODES = 2000


@dataclass(frozen=True, slots=True)
class Needs:
    """What a graph needs from a ComfyUI server."""

    nodes: frozenset[str]
    models: frozenset[tuple[str, str, str]]  # (class, input, file)

    def digest(self) -> str:
        canonical = json.dumps(
            {"nodes": sorted(self.nodes), "models": sorted(self.models)}, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Checked:
    """A graph that passed: what it needs and its output nodes."""

    graph: dict[str, dict[str, Any]]
    needs: Needs
    outputs: list[OutputSpec]


@dataclass
class _Server:
    info: dict[str, Any]
    nodes: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = frozenset(self.info)

    def options(self, class_type: str, name: str) -> list[str] | None:
        spec = _input_spec(self.info.get(class_type), name)
        return combo_options(spec) if spec is not None else None

    def lacks(self, needs: Needs) -> list[str]:
        missing = [f"node {n}" for n in sorted(needs.nodes - self.nodes)]
        for class_type, name, file in sorted(needs.models):
            if class_type in self.nodes and file not in (self.options(class_type, name) or []):
                missing.append(f"model {class_type}.{name}={file}")
        return missing


class FleetNodes:
    """The ``/object_info`` of every live, healthy ComfyUI server of the fleet."""

    def __init__(self, fleet: Fleet, store: ObjectStore) -> None:
        self.fleet = fleet
        self.store = store
        self._infos: dict[str, dict[str, Any]] = {}  # content-addressed: never stale

    async def servers(self) -> list[_Server]:
        keys = sorted(
            {
                server.object_info
                for worker in await self.fleet.workers()
                if not worker.draining
                for server in worker.servers
                if server.healthy and server.object_info
            }
        )
        missing = [k for k in keys if k not in self._infos]
        loaded = await asyncio.gather(*(self.store.get_bytes(k) for k in missing))
        for key, raw in zip(missing, loaded, strict=True):
            self._infos[key] = json.loads(raw)
        return [_Server(self._infos[k]) for k in keys]


class Workflows:
    """Checks graphs against the live fleet and keeps the requirement-set models."""

    def __init__(
        self, bus: Bus, registry: LiveCatalogue, nodes: FleetNodes, cost_per_gpu_second: float
    ) -> None:
        self.bus = bus
        self.registry = registry
        self.nodes = nodes
        self.cost_per_gpu_second = cost_per_gpu_second

    async def check(self, graph: Any, staged: frozenset[str] = frozenset()) -> Checked:
        """The graph checked (422 ``invalid_workflow``, 503 ``workflow_unservable``).

        ``staged``: the names of files that are staged for the run (a job's own uploads); every
        other file a loader names must be one its server lists."""
        graph = api_format(graph)
        servers = await self.nodes.servers()
        if not servers:
            raise ApiError(
                503,
                ErrorCode.WORKFLOW_UNSERVABLE,
                "no ComfyUI server is up to run workflows",
                headers={"Retry-After": "10"},
            )
        known: dict[str, Any] = {}
        for server in servers:
            for name, spec in server.info.items():
                known.setdefault(name, spec)
        needs = needs_of(graph, known)
        unknown = sorted(needs.nodes - set(known))
        if unknown:
            raise ApiError(
                503,
                ErrorCode.WORKFLOW_UNSERVABLE,
                f"no live ComfyUI server has the node classes {', '.join(unknown)}",
                details={"missing": [f"node {n}" for n in unknown]},
            )
        servable = [s for s in servers if not s.lacks(needs)]
        if not servable:
            best = min((s.lacks(needs) for s in servers), key=len)
            raise ApiError(
                503,
                ErrorCode.WORKFLOW_UNSERVABLE,
                "no live ComfyUI server has everything this workflow needs: " + ", ".join(best),
                details={"missing": best},
            )
        verdict = validate(graph, servable[0].info, staged)
        if verdict is not None:
            raise ApiError(422, ErrorCode.INVALID_WORKFLOW, verdict[0], details=verdict[1])
        return Checked(graph, needs, output_specs(graph, servable[0].info))

    async def requirement_model(self, needs: Needs) -> ModelTemplate:
        """The hidden catalogue model of a requirement set, written once to the bucket."""
        name = f"{WORKFLOW_MODEL}{needs.digest()}"
        try:
            return self.registry.get(name)
        except Exception:  # UnknownModel: the first graph with these needs
            pass
        template = requirement_template(name, needs, self.cost_per_gpu_second)
        kv = await self.bus.kv(self.bus.names.bucket("models"))
        await kv.put(name, template.model_dump_json().encode())
        await self.registry.refresh()
        return self.registry.get(name)


def requirement_template(name: str, needs: Needs, cost_per_gpu_second: float) -> ModelTemplate:
    """The catalogue model that routes graphs needing exactly ``needs``."""
    return ModelTemplate(
        name=name,
        version=1,
        kind="workflow",
        title="ComfyUI workflow",
        description="Graphs that need these node classes and model files.",
        parameters={
            "type": "object",
            "required": ["workflow"],
            "properties": {
                "workflow": {"type": "object", "description": "API-format graph"},
                "outputs": {"type": "array", "items": {"type": "object"}},
            },
        },
        required_nodes=sorted(needs.nodes),
        required_models=required_models(needs),
        enhance=False,
        cost_per_gpu_second=cost_per_gpu_second,
        notes="hidden: made by the gateway for workflow jobs",
    )


def required_models(needs: Needs) -> list[RequiredModel]:
    return [RequiredModel(node_class=c, input=i, file=f) for c, i, f in sorted(needs.models)]


def is_workflow_model(template: ModelTemplate) -> bool:
    return template.kind == "workflow"


# --- the graph -------------------------------------------------------------------------------
def _invalid(message: str, details: dict[str, Any] | None = None) -> ApiError:
    return ApiError(422, ErrorCode.INVALID_WORKFLOW, message, details=details)


def api_format(graph: Any) -> dict[str, dict[str, Any]]:
    """The graph if it is ComfyUI's API format (422 otherwise, naming the UI format)."""
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise _invalid(
            "this is the ComfyUI editor's format; export it with 'Export (API)'",
            {"format": "ui"},
        )
    if not isinstance(graph, dict) or not graph:
        raise _invalid("a workflow is a non-empty object of node id -> node")
    if len(graph) > MAX_NODES:
        raise _invalid(f"a workflow has at most {MAX_NODES} nodes")
    for node_id, node in graph.items():
        if (
            not isinstance(node, dict)
            or not isinstance(node.get("class_type"), str)
            or not isinstance(node.get("inputs", {}), dict)
        ):
            raise _invalid(
                f"node {node_id!r} must be an object with class_type and inputs",
                {"node_id": str(node_id)},
            )
    return graph


def needs_of(graph: dict[str, dict[str, Any]], known: dict[str, Any]) -> Needs:
    """The node classes and model files a graph names."""
    nodes = frozenset(str(node["class_type"]) for node in graph.values())
    models = set()
    for node in graph.values():
        class_type = str(node["class_type"])
        for name, value in (node.get("inputs") or {}).items():
            if isinstance(value, str) and MODEL_FILE.search(value):
                if combo_options(_input_spec(known.get(class_type), name)) is not None:
                    models.add((class_type, str(name), value))
    return Needs(nodes, frozenset(models))


def _input_spec(node: Any, name: str) -> Any:
    if not isinstance(node, dict):
        return None
    inputs = node.get("input")
    if not isinstance(inputs, dict):
        return None
    for group in ("required", "optional"):
        specs = inputs.get(group)
        if isinstance(specs, dict) and name in specs:
            return specs[name]
    return None


def _err(kind: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    """One entry of ComfyUI's error lists."""
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _node_errors(
    graph: dict[str, dict[str, Any]], node_id: str, info: dict[str, Any], staged: frozenset[str]
) -> list[dict[str, Any]]:
    node = graph[node_id]
    definition = info[str(node["class_type"])]
    inputs = node.get("inputs") or {}
    groups = definition.get("input") or {}
    errors = []
    for required, group in ((True, "required"), (False, "optional")):
        for name, spec in (groups.get(group) or {}).items():
            if name not in inputs:
                if required:
                    errors.append(
                        _err(
                            "required_input_missing",
                            "Required input is missing",
                            name,
                            input_name=name,
                        )
                    )
                continue
            errors += _input_errors(graph, info, name, spec, inputs[name], staged)
    return errors


def _input_errors(
    graph: dict[str, dict[str, Any]],
    info: dict[str, Any],
    name: str,
    spec: Any,
    value: Any,
    staged: frozenset[str],
) -> list[dict[str, Any]]:
    kind = spec[0] if isinstance(spec, list) and spec else None
    options = spec[1] if isinstance(spec, list) and len(spec) > 1 else {}
    options = options if isinstance(options, dict) else {}
    extra = {"input_name": name, "input_config": spec, "received_value": value}
    if isinstance(value, list):
        if len(value) != 2 or not isinstance(value[1], int):
            return [
                _err(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    name,
                    **extra,
                )
            ]
        source = graph.get(str(value[0]))
        if source is None:
            return [_err("bad_linked_input", "Linked node does not exist", name, **extra)]
        returns = (info.get(str(source["class_type"])) or {}).get("output") or []
        slot = value[1]
        if not 0 <= slot < len(returns):
            return [_err("bad_linked_input", "Linked output slot does not exist", name, **extra)]
        given = returns[slot]
        wanted = "COMBO" if isinstance(kind, list) else kind
        if isinstance(given, str) and isinstance(wanted, str) and not _types_match(given, wanted):
            return [
                _err(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{name}, received_type({given}) mismatch input_type({wanted})",
                    **extra,
                )
            ]
        return []
    choices = combo_options(spec)
    if choices is not None:
        if str(value) in staged:
            return []  # a job's own input file, staged for the run
        # Any other file must be one the server lists: never a file staged for another job.
        if str(value) not in choices:
            shown = choices if len(choices) <= 20 else [*choices[:20], "..."]
            return [
                _err(
                    "value_not_in_list",
                    "Value not in list",
                    f"{name}: '{value}' not in {shown}",
                    **extra,
                )
            ]
        return []
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)
            except (TypeError, ValueError):
                return [
                    _err(
                        "invalid_input_type",
                        f"Failed to convert an input value to a {kind} value",
                        f"{name}, {value}",
                        **extra,
                    )
                ]
        low, high = options.get("min"), options.get("max")
        if isinstance(low, int | float) and value < low:
            return [
                _err(
                    "value_smaller_than_min",
                    f"Value {value} smaller than min of {low}",
                    f"{name}",
                    **extra,
                )
            ]
        if isinstance(high, int | float) and value > high:
            return [
                _err(
                    "value_bigger_than_max",
                    f"Value {value} bigger than max of {high}",
                    f"{name}",
                    **extra,
                )
            ]
    return []


def _types_match(given: str, wanted: str) -> bool:
    if "*" in (given, wanted):
        return True
    return bool(set(given.split(",")) & set(wanted.split(",")))


def validate(
    graph: dict[str, dict[str, Any]], info: dict[str, Any], staged: frozenset[str] = frozenset()
) -> tuple[str, dict[str, Any]] | None:
    """ComfyUI's verdict on the graph for a server with ``info``: None if it would run it,
    else a message and ``{"error": ..., "node_errors": ...}`` shaped as ComfyUI's own.
    ``staged`` names the files staged for the run, which no server lists yet."""
    outputs = [i for i, n in graph.items() if (info.get(n["class_type"]) or {}).get("output_node")]
    if not outputs:
        error = _err("prompt_no_outputs", "Prompt has no outputs", "")
        return "the workflow has no output node", {"error": error, "node_errors": {}}
    node_errors: dict[str, Any] = {}
    for node_id in graph:
        errors = _node_errors(graph, node_id, info, staged)
        if errors:
            node_errors[str(node_id)] = {
                "errors": errors,
                "dependent_outputs": outputs,
                "class_type": graph[node_id]["class_type"],
            }
    if not node_errors:
        return None
    first_id, first = next(iter(node_errors.items()))
    reason = first["errors"][0]
    error = _err("prompt_outputs_failed_validation", "Prompt outputs failed validation", "")
    message = f"Node {first_id} ({first['class_type']}): {reason['message']}: {reason['details']}"
    return message, {"error": error, "node_errors": node_errors}


def output_specs(graph: dict[str, dict[str, Any]], info: dict[str, Any]) -> list[OutputSpec]:
    """The graph's output nodes and what the worker collects from each."""
    specs = []
    for node_id, node in graph.items():
        class_type = str(node["class_type"])
        if not (info.get(class_type) or {}).get("output_node"):
            continue
        lowered = class_type.lower()
        if "audio" in lowered:
            specs.append(OutputSpec(node=str(node_id), kind=OutputKind.AUDIO, key="audio"))
        elif "video" in lowered or "vhs" in lowered or "animated" in lowered:
            specs.append(OutputSpec(node=str(node_id), kind=OutputKind.VIDEO, key="gifs"))
        else:
            specs.append(OutputSpec(node=str(node_id), kind=OutputKind.IMAGE, key="images"))
    return specs
