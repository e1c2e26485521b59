"""Pipelines: templates whose steps are other catalogue models, checked whole before any runs.

A step's input values are literals, ``{"input": "<parameter>"}`` (one of the pipeline's own
parameters) or ``{"step": "<step>", "output": n}`` (an earlier step's n-th output). A pipeline
is refused, with its code, when a reference names nothing (``pipeline_unknown_reference``: an
unknown step, pipeline parameter, model, or model parameter), when the steps wait on each other
in a circle (``pipeline_cycle``), or when an output's kind does not fit the input it feeds
(``pipeline_kind_mismatch``: a video into an image input). Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from comfyline.contracts import (
    ComfylineError,
    ErrorCode,
    ModelTemplate,
    OutputKind,
    OutputRef,
    PipelineStep,
)

from .catalogue import Catalogue, UnknownModel
from .validation import InputInvalid, validate_input

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


class PipelineInvalid(ComfylineError):
    """A pipeline template that cannot run (its ``code`` says why; ``details.step`` where)."""

    code = ErrorCode.PIPELINE_UNKNOWN_REFERENCE


def step_ref(value: Any) -> tuple[str, int] | None:
    """``(step, output)`` when ``value`` is ``{"step": ..., "output": n}``."""
    if isinstance(value, dict) and set(value) <= {"step", "output"} and "step" in value:
        return str(value["step"]), int(value.get("output", 0))
    return None


def input_ref(value: Any) -> str | None:
    """The pipeline parameter's name when ``value`` is ``{"input": ...}``."""
    if isinstance(value, dict) and set(value) == {"input"}:
        return str(value["input"])
    return None


def dependencies(step: PipelineStep) -> set[str]:
    """The steps whose outputs ``step`` needs."""
    return {ref[0] for v in step.input.values() if (ref := step_ref(v)) is not None}


def output_kinds(template: ModelTemplate, index: int) -> OutputKind | None:
    """The kind of a model's ``index``-th output (a batch repeats its node's kind)."""
    if not template.outputs:
        return None
    return template.outputs[min(index, len(template.outputs) - 1)].kind


def _fail(code: ErrorCode, message: str, **details: Any) -> PipelineInvalid:
    return PipelineInvalid(message, code=code, details=details)


def step_order(template: ModelTemplate) -> list[str]:
    """The steps in an order where each comes after those it needs (raises on a cycle)."""
    deps = {s.name: dependencies(s) for s in template.steps}
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise _fail(
                ErrorCode.PIPELINE_CYCLE,
                f"{template.name}: steps wait on each other: {' -> '.join(cycle)}",
                cycle=cycle,
            )
        state[name] = 1
        for dep in sorted(deps[name]):
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for step in template.steps:
        visit(step.name, [])
    return order


def validate_pipeline(template: ModelTemplate, catalogue: Catalogue) -> None:
    """Check a pipeline whole; raise :class:`PipelineInvalid` with the first problem's code."""
    unknown = ErrorCode.PIPELINE_UNKNOWN_REFERENCE
    names = [s.name for s in template.steps]
    if len(set(names)) != len(names):
        raise _fail(unknown, f"{template.name}: two steps share a name", steps=names)
    params = set(template.parameters.get("properties", {}))
    steps = {s.name: s for s in template.steps}
    models: dict[str, ModelTemplate] = {}
    for step in template.steps:
        try:
            model = catalogue.get(step.model)
        except UnknownModel:
            raise _fail(
                unknown, f"step {step.name}: unknown model {step.model!r}", step=step.name
            ) from None
        if model.engine == "pipeline":
            raise _fail(unknown, f"step {step.name}: a step cannot be a pipeline", step=step.name)
        models[step.name] = model
        accepted = model.parameters.get("properties", {})
        for param, value in step.input.items():
            where = {"step": step.name, "param": param}
            if param not in accepted:
                raise _fail(
                    unknown, f"step {step.name}: {step.model} has no input {param!r}", **where
                )
            if (name := input_ref(value)) is not None and name not in params:
                raise _fail(unknown, f"step {step.name}: no pipeline input {name!r}", **where)
            ref = step_ref(value)
            if ref is not None and ref[0] not in steps:
                raise _fail(unknown, f"step {step.name}: no step {ref[0]!r}", **where)
    step_order(template)
    for step in template.steps:
        accepted = models[step.name].parameters.get("properties", {})
        for param, value in step.input.items():
            ref = step_ref(value)
            if ref is None:
                continue
            kind = output_kinds(models[ref[0]], ref[1])
            fits = (
                accepted[param].get("x-asset-kinds", [])
                if isinstance(accepted[param], dict)
                else []
            )
            if kind is None or kind.value not in fits:
                raise _fail(
                    ErrorCode.PIPELINE_KIND_MISMATCH,
                    f"step {step.name}: {param} takes {fits or 'no file'}, "
                    f"but step {ref[0]} makes {kind.value if kind else 'nothing'}",
                    step=step.name,
                    param=param,
                    expects=fits,
                    given=kind.value if kind else None,
                )


def child_job_id(parent_id: str, step: str) -> str:
    """The job id of a pipeline's step: derived, so a resumed pipeline never submits it twice.

    It keeps the pipeline's time part (the first 10 characters), so it sorts beside its parent.
    """
    digest = hashlib.sha256(f"{parent_id}/{step}".encode()).digest()
    number = int.from_bytes(digest[:10], "big")
    body = "".join(_CROCKFORD[(number >> (5 * i)) & 31] for i in range(16))
    return f"{parent_id[:14]}{body}"


def ready(template: ModelTemplate, succeeded: set[str], started: set[str]) -> list[PipelineStep]:
    """The steps not started yet whose every dependency has succeeded."""
    return [s for s in template.steps if s.name not in started and dependencies(s) <= succeeded]


def step_input(
    step: PipelineStep,
    pipeline_input: Mapping[str, Any],
    outputs: Mapping[str, list[OutputRef]],
    job_ids: Mapping[str, str],
) -> dict[str, Any]:
    """A step's input: literals as they are, pipeline inputs (left out when not given), and
    earlier outputs as ``{"job": <child job id>, "output": n}`` (the worker reads their S3 key)."""
    data: dict[str, Any] = {}
    for param, value in step.input.items():
        if (name := input_ref(value)) is not None:
            if name in pipeline_input and pipeline_input[name] is not None:
                data[param] = pipeline_input[name]
        elif (ref := step_ref(value)) is not None:
            produced = outputs.get(ref[0], [])
            if ref[1] >= len(produced):
                raise _fail(
                    ErrorCode.PIPELINE_KIND_MISMATCH,
                    f"step {step.name}: step {ref[0]} made no output {ref[1]}",
                    step=step.name,
                )
            data[param] = {"job": job_ids[ref[0]], "output": ref[1]}
        else:
            data[param] = value
    return data


def final_steps(template: ModelTemplate) -> list[str]:
    """The steps no other step reads from: their outputs are the pipeline's outputs."""
    needed = {d for s in template.steps for d in dependencies(s)}
    return [s.name for s in template.steps if s.name not in needed]


def check_step_inputs(
    template: ModelTemplate, catalogue: Catalogue, pipeline_input: Mapping[str, Any]
) -> None:
    """Validate every step's input as it will be, before any step runs (earlier outputs stand
    in as references), so a job that would fail at its third step is refused at once.

    Raises:
        InputInvalid: naming the step (``details.step``) and the problems of its input.
    """
    parent = "job_" + "0" * 26
    ids = {s.name: child_job_id(parent, s.name) for s in template.steps}
    stand_in = OutputRef(index=0, key="-", kind=OutputKind.IMAGE, content_type="-", size=0)
    outputs = {s.name: [stand_in] * 64 for s in template.steps}
    for step in template.steps:
        try:
            validate_input(
                catalogue.get(step.model), step_input(step, pipeline_input, outputs, ids)
            )
        except InputInvalid as exc:
            raise InputInvalid(
                f"step {step.name} ({step.model}): {exc.message}",
                details={"step": step.name, **exc.details},
            ) from exc
