"""Stand-ins for the orchestrator's neighbours, for tests against a real NATS.

- :func:`submit`: what the gateway publishes for ``POST /v1/jobs``;
- :class:`ScriptedWorker` (:mod:`.worker`): a comfy-worker without ComfyUI;
- :func:`serve_policy`, :func:`serve_enhancer`, :class:`WebhookReceiver` (:mod:`.stubs`): the
  prompt-enhancer's two services, and a webhook endpoint on 127.0.0.1;
- :func:`wait_record`, :func:`event_counts`: bounded polling and exact counts of ``JOBS`` events;
- :func:`not_ended`: an owner's jobs not ended, as the active-jobs cap counts them;
- :func:`sample_template`, :func:`quick_settings`: a test model and test-speed settings;
- :func:`orchestrator_process`, :func:`orchestrator_ready` (:mod:`.process`): the real service as
  a child process, to kill it.

The gateway's and the worker's own tests can use these too, to run a real orchestrator.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js.errors import KeyNotFoundError

from comfyline.catalogue import Catalogue, work_message
from comfyline.contracts import (
    ActiveJobs,
    Binding,
    Deadlines,
    EndedJobs,
    EventKind,
    JobEvent,
    JobRecord,
    JobState,
    ModelTemplate,
    OutputKind,
    OutputSpec,
    PromptSpec,
    RunJob,
    Submission,
    WebhookSpec,
    active_jobs_key,
    ended_jobs_key,
    jobs_not_ended,
    new_job_id,
    owner_token,
)
from comfyline.orchestrator.records import JobStore
from comfyline.orchestrator.settings import Settings, WebhookSettings
from comfyline.runtime import Bus, NatsSettings

from .process import orchestrator_process, orchestrator_ready
from .stubs import Received, WebhookReceiver, serve_enhancer, serve_policy
from .worker import (
    Outcome,
    Script,
    ScriptedWorker,
    announce_worker,
    output_of,
    succeed,
    succeed_within_delay,
)

__all__ = [
    "Outcome",
    "Received",
    "Script",
    "ScriptedWorker",
    "WebhookReceiver",
    "announce_worker",
    "event_counts",
    "gateway_sent",
    "not_ended",
    "orchestrator_process",
    "orchestrator_ready",
    "output_of",
    "quick_settings",
    "sample_template",
    "serve_enhancer",
    "serve_policy",
    "submit",
    "submitted_event",
    "succeed",
    "succeed_within_delay",
    "until",
    "wait_record",
]


def submitted_event(
    model: str,
    data: dict[str, Any] | None = None,
    *,
    owner: str = "u1",
    job_id: str | None = None,
    webhook: WebhookSpec | None = None,
    enhance: bool = True,
    deadline_s: float | None = None,
    content_tier: str = "general",
) -> JobEvent:
    """A job's ``submitted`` event as the gateway makes it (not published)."""
    job_id = job_id or new_job_id()
    submission = Submission(
        model=model,
        template_version=1,
        input=data or {},
        webhook=webhook,
        enhance=enhance,
        deadline_s=deadline_s,
        content_tier=content_tier,
    )
    return JobEvent(
        job_id=job_id,
        owner=owner,
        model=model,
        kind=EventKind.SUBMITTED,
        status=JobState.QUEUED,
        submission=submission,
    )


def gateway_sent(model: str, data: dict[str, Any]) -> tuple[JobEvent, RunJob]:
    """A built-in model's ``submitted`` event saying ``work_sent`` and the work the gateway
    sends before it (neither published)."""
    event = submitted_event(model, data)
    assert event.submission is not None
    submission = event.submission.model_copy(update={"work_sent": True})
    work = work_message(
        Catalogue.builtin().get(model),
        job_id=event.job_id,
        owner=event.owner,
        data=submission.input,
        created_at=event.occurred_at,
        deadline_s=None,
    )
    return event.model_copy(update={"submission": submission}), work


async def submit(bus: Bus, model: str, data: dict[str, Any], **fields: Any) -> str:
    """Publish a ``submitted`` event as the gateway does (``fields``: as
    :func:`submitted_event`); returns the job id."""
    event = submitted_event(model, data, **fields)
    subject = bus.names.job_event(owner_token(event.owner), event.job_id, "submitted")
    await bus.publish(subject, event, msg_id=f"{event.job_id}:submitted")
    return event.job_id


async def not_ended(bus: Bus, owner: str) -> tuple[int, EndedJobs]:
    """``owner``'s jobs that have not ended (accepted less ended, as the active-jobs cap counts
    them) and the ended count as stored (a zero count when none is)."""
    usage = await bus.kv(bus.names.bucket("usage"))
    values: list[bytes | None] = []
    for key in (active_jobs_key(owner), ended_jobs_key(owner)):
        try:
            values.append((await usage.get(key)).value or b"{}")
        except KeyNotFoundError:
            values.append(None)
    active = ActiveJobs.from_bytes(values[0]) if values[0] else None
    ended = EndedJobs.from_bytes(values[1]) if values[1] else EndedJobs(owner=owner)
    return jobs_not_ended(active, ended), ended


async def wait_record(
    bus: Bus,
    job_id: str,
    predicate: Callable[[JobRecord], bool] = lambda r: r.status.terminal,
    timeout_s: float = 15.0,
) -> JobRecord:
    """Poll the job record until ``predicate`` holds (raises ``TimeoutError`` with the last one)."""
    store = JobStore(bus)
    deadline = time.monotonic() + timeout_s
    last: JobRecord | None = None
    while time.monotonic() < deadline:
        found = await store.get(job_id)
        if found is not None:
            last = found.record
            if predicate(last):
                return last
        await asyncio.sleep(0.05)
    raise TimeoutError(f"job {job_id} never matched; last record: {last!r}")


async def until(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 5.0, every_s: float = 0.02
) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition never held")
        await asyncio.sleep(every_s)


async def event_counts(bus: Bus, job_id: str | None = None) -> dict[str, int]:
    """How many messages each ``JOBS`` subject holds, as ``{"<job_id>.<kind>": n}``."""
    names = bus.names
    pattern = names.job_events_filter(job_id) if job_id else names.all_job_events()
    info = await bus.js.stream_info(names.stream("JOBS"), subjects_filter=pattern)
    counts: dict[str, int] = {}
    for subject, n in (info.state.subjects or {}).items():
        job, kind = subject.split(".")[-2:]
        counts[f"{job}.{kind}"] = n
    return counts


def sample_template(name: str = "tti-test", **updates: Any) -> ModelTemplate:
    """A small text-to-image template with a prompt spec (enhancement, policy, cost)."""
    template = ModelTemplate(
        name=name,
        version=1,
        kind="image",
        title="test image model",
        description="a text-to-image template for orchestrator tests",
        graph={
            "1": {"class_type": "CLIPTextEncode", "inputs": {"text": ""}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        },
        parameters={
            "type": "object",
            "properties": {
                "prompt": {"type": "string"},
                "negative_prompt": {"type": "string"},
                "steps": {"type": "integer", "default": 4},
            },
        },
        bindings=[Binding(param="prompt", node="1", input="text")],
        outputs=[OutputSpec(node="2", kind=OutputKind.IMAGE)],
        prompt=PromptSpec(param="prompt", negative_param="negative_prompt", budget_tokens=75),
        deadlines=Deadlines(queue_s=30, run_s=30),
        retry_limit=2,
        cost_per_gpu_second=0.002,
    )
    return template.model_copy(update=updates)


def quick_settings(nats: NatsSettings, namespace: str, **updates: Any) -> Settings:
    """Settings for tests: short timeouts and backoffs, webhooks allowed to reach loopback."""
    values: dict[str, Any] = {
        "namespace": namespace,
        "nats": nats,
        "environment": "test",
        "ack_wait_s": 5.0,
        "fetch_timeout_s": 0.2,
        "policy_timeout_s": 0.5,
        "policy_attempts": 2,
        "policy_backoff_s": 0.05,
        "enhance_timeout_s": 0.5,
        "no_worker_recheck_s": 0.3,
        "progress_min_interval_s": 0.0,
        "shutdown_grace_s": 2.0,
        "webhook": WebhookSettings(allow_loopback=True, allow_http=True, backoff_s=[0.2, 0.4]),
    }
    values.update(updates)
    return Settings(**values)
