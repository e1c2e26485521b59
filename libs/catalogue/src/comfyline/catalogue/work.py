"""What a job sends to a worker, and what decides whether it may go at once.

Shared by the services that send work: the orchestrator, and the gateway for a job it sends
with its submission (a plain job with nothing to screen and a live worker, see
``Submission.work_sent``). Both must build the same message: the worker may get either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from comfyline.contracts import Deadlines, ModelTemplate, RunJob, owner_token

from .render import TemplateError, compose_prompt


@dataclass(frozen=True, slots=True)
class Texts:
    """The words of a job: its (composed) prompt, negative prompt, and any other free text."""

    prompt: str | None = None
    negative: str | None = None
    other: tuple[str, ...] = ()

    def all(self) -> list[str]:
        """Every non-empty text, for the policy check."""
        return [t for t in (self.prompt, self.negative, *self.other) if t and t.strip()]


def job_texts(template: ModelTemplate, data: dict[str, Any]) -> Texts:
    """The texts of a job's input, as its template reads them.

    Raises:
        TemplateError: the template's ``compose`` names a field the input lacks.
    """
    spec = template.prompt
    assets = {b.param for b in template.bindings if b.transform == "asset"}
    properties: dict[str, Any] = template.parameters.get("properties", {})
    taken = {spec.param, spec.negative_param} if spec else set()

    def free_text(name: str, value: Any) -> bool:
        schema = properties.get(name, {})
        return (
            isinstance(value, str)
            and name not in assets
            and name not in taken
            and "enum" not in schema
            and "format" not in schema
            and bool(value.strip())
        )

    other = tuple(str(v) for k, v in sorted(data.items()) if free_text(k, v))
    if spec is None:
        return Texts(other=other)
    prompt = compose_prompt(template, data)
    negative = data.get(spec.negative_param) if spec.negative_param else None
    return Texts(prompt, str(negative) if negative else None, () if spec.compose else other)


def has_text(template: ModelTemplate, data: dict[str, Any]) -> bool:
    """True when a job has text for the content policy or the enhancer, or texts that cannot be
    read (its screening then says why)."""
    try:
        return bool(job_texts(template, data).all())
    except TemplateError:
        return True


def goes_at_once(
    template: ModelTemplate,
    data: dict[str, Any],
    *,
    retry: bool,
    paused: bool,
    served: bool,
) -> bool:
    """True when a new job needs nothing before its work is sent: a plain model (not a
    pipeline), not a retry (its old job is marked replaced first), its model not paused and
    ``served`` (a live worker runs it, where one is required), and no text to screen.

    The one rule for both services that send work: the orchestrator for the jobs it creates,
    the gateway for the ones it sends with their submission (``Submission.work_sent``)."""
    if template.engine == "pipeline" or retry or paused or not served:
        return False
    return not has_text(template, data)


def run_limits(template: ModelTemplate | None, deadline_s: float | None) -> Deadlines:
    """A job's queue and run limits: its model's, the run one shortened by the client's
    ``deadline_s`` (the defaults when the model is unknown)."""
    if template is None:
        return Deadlines()
    run_s = template.deadlines.run_s
    if deadline_s is not None and deadline_s > 0:
        run_s = min(run_s, deadline_s)
    return Deadlines(queue_s=template.deadlines.queue_s, run_s=run_s)


def work_message(
    template: ModelTemplate,
    *,
    job_id: str,
    owner: str,
    data: dict[str, Any],
    created_at: datetime,
    deadline_s: float | None,
) -> RunJob:
    """The work message of a job (``data``: its input with the final prompt).

    ``deadline_at`` is the latest any delivery of the job could still be running under the
    deadline rules (each of ``retry_limit + 1`` deliveries may wait ``queue_s`` and run
    ``run_s``), so a worker may use it as a hard stop without ever cutting a legitimate run
    short. The orchestrator enforces the real deadlines and sends ``control.cancel``.
    """
    limits = run_limits(template, deadline_s)
    span = timedelta(seconds=(template.retry_limit + 1) * (limits.queue_s + limits.run_s))
    return RunJob(
        job_id=job_id,
        owner=owner,
        model=template.name,
        template_version=template.version,
        input=data,
        deadline_at=created_at + span,
        output_prefix=f"outputs/{owner_token(owner)}/{job_id}/",
    )
