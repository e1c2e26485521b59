"""Mixed-model runs for tests and benchmarks of scheduling: two models reading different
checkpoints, one worker, the checkpoint swaps its servers made.

``mixed_run`` starts a :class:`~comfyline.worker.Worker` in this process on the caller's bus and
store, publishes jobs alternating between the two models, and counts, from the ``started``
reports, the jobs whose server last ran the other checkpoint.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from comfyline.catalogue import Catalogue
from comfyline.contracts import (
    Binding,
    Deadlines,
    ModelTemplate,
    OutputKind,
    OutputSpec,
    RequiredModel,
    RunEvent,
    RunJob,
    new_job_id,
)
from comfyline.runtime import Bus, NatsSettings, ObjectStore, S3Settings
from comfyline.testkit.comfyui import txt2img_graph
from comfyline.worker.service import Worker
from comfyline.worker.settings import Settings

CHECKPOINTS = {
    "swap-xl": "sd_xl_base_1.0.safetensors",
    "swap-lightning": "sdxl_lightning_4step.safetensors",
}


def checkpoint_template(name: str, checkpoint: str) -> ModelTemplate:
    """A one-step SDXL-shaped model that reads ``checkpoint`` (cheap on the simulator)."""
    return ModelTemplate(
        name=name,
        version=1,
        kind="image",
        title=f"{name} (affinity benchmark)",
        description=f"txt2img reading {checkpoint}",
        graph=txt2img_graph(ckpt=checkpoint, steps=1, size=64),
        parameters={
            "type": "object",
            "properties": {"seed": {"type": "integer", "minimum": 0, "default": 0}},
        },
        bindings=[Binding(param="seed", node="3", input="seed")],
        outputs=[OutputSpec(node="9", kind=OutputKind.IMAGE)],
        required_models=[
            RequiredModel(node_class="CheckpointLoaderSimple", input="ckpt_name", file=checkpoint)
        ],
        deadlines=Deadlines(queue_s=600, run_s=120),
    )


def swap_catalogue() -> Catalogue:
    """The built-in models and the two checkpoint models."""
    extra = [checkpoint_template(name, ckpt) for name, ckpt in CHECKPOINTS.items()]
    return Catalogue([*Catalogue.builtin(), *extra])


def start_order(events: Iterable[RunEvent]) -> list[RunEvent]:
    """The event that tells each attempt's start, first of each, in order of start: a
    ``started``, or the ``completed`` of a run that ended within the worker's started delay
    (both carry ``started_at``)."""
    firsts: dict[tuple[str, int], RunEvent] = {}
    for event in events:
        if event.kind in ("started", "completed") and event.started_at is not None:
            firsts.setdefault((event.job_id, event.attempt), event)
    return sorted(firsts.values(), key=lambda e: e.started_at or e.occurred_at)


def count_swaps(started: list[RunEvent], model_of: dict[str, str]) -> int:
    """Jobs that ran on a server whose last job read another checkpoint (``started`` in order)."""
    last: dict[str | None, str] = {}
    swaps = 0
    for event in started:
        checkpoint = CHECKPOINTS[model_of[event.job_id]]
        before = last.get(event.server)
        swaps += before is not None and before != checkpoint
        last[event.server] = checkpoint
    return swaps


@dataclass(frozen=True, slots=True)
class MixedRun:
    """What one run of mixed jobs did."""

    jobs: int
    swaps: int
    seconds: float
    per_server: dict[str, int]

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds


async def mixed_run(
    bus: Bus,
    store: ObjectStore,
    nats: NatsSettings,
    s3: S3Settings,
    urls: list[str],
    *,
    jobs: int = 100,
    affinity: bool = True,
    timeout_s: float = 300.0,
) -> MixedRun:
    """Run ``jobs`` jobs alternating the two checkpoint models on one worker serving ``urls``."""
    settings = Settings(
        namespace=bus.names.namespace,
        nats=nats,
        s3=s3,
        comfyui_urls=urls,
        worker_id=f"bench-{uuid.uuid4().hex[:8]}",
        affinity=affinity,
        health_interval_s=1.0,
        idle_poll_s=0.3,
        heartbeat_interval_s=1.0,
        log_json=False,
    )
    worker = Worker(bus, store, swap_catalogue(), settings)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    events: list[RunEvent] = []
    done: set[str] = set()
    finished = asyncio.Event()

    async def on_event(msg: Any) -> None:
        event = RunEvent.from_bytes(msg.data)
        events.append(event)
        if event.kind in {"completed", "failed", "cancelled"}:
            done.add(event.job_id)
            if len(done) >= jobs:
                finished.set()

    sub = await bus.nc.subscribe(bus.names.all_run_events(), cb=on_event)
    try:
        for _ in range(600):  # both servers up, both models bound (60 s at most)
            if set(CHECKPOINTS) <= worker.fetcher.bound and all(
                set(CHECKPOINTS) <= set(s.models) for s in worker.servers
            ):
                break
            await asyncio.sleep(0.1)
        else:
            raise TimeoutError("the worker never served both models")
        models = list(CHECKPOINTS)
        model_of: dict[str, str] = {}
        began = time.perf_counter()
        for n in range(jobs):
            model = models[n % 2]
            job = RunJob(
                job_id=new_job_id(),
                owner="bench",
                model=model,
                template_version=1,
                input={"seed": n},
                output_prefix="outputs/bench/",
            )
            model_of[job.job_id] = model
            await bus.publish(bus.names.work(model), job, msg_id=f"{job.job_id}:run")
        async with asyncio.timeout(timeout_s):
            await finished.wait()
        seconds = time.perf_counter() - began
    finally:
        await sub.unsubscribe()
        stop.set()
        await asyncio.wait_for(task, 60)
    started = start_order(events)
    per_server: dict[str, int] = defaultdict(int)
    for event in started:
        per_server[event.server or "?"] += 1
    return MixedRun(jobs, count_swaps(started, model_of), seconds, dict(per_server))
