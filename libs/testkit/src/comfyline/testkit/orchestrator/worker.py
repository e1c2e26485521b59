"""A comfy-worker without ComfyUI, for tests: same consumer, same reports, scripted outcomes.

It binds ``work-<model>`` as the real worker does (``MaxDeliver`` = retries + 1), heartbeats in
``workers``, skips jobs whose record has ended, hears ``control.cancel.<job_id>``, and for each
delivery plays a script that reports run events and says how the delivery ends. It never acks by
itself: :func:`comfyline.runtime.run_consumer` settles each delivery from the handler's outcome
(``ack``: return; ``nak``: :class:`~comfyline.runtime.Retry`; ``term``:
:class:`~comfyline.runtime.Reject`; ``none``: the handler hangs, as a dead worker's would, until
the worker stops).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Literal

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from comfyline.contracts import (
    CancelCommand,
    OutputKind,
    OutputRef,
    Progress,
    RunEvent,
    RunEventKind,
    RunJob,
    ServerStatus,
    WorkerHeartbeat,
    utcnow,
)
from comfyline.orchestrator.records import JobStore
from comfyline.runtime import (
    Bus,
    Delivery,
    Reject,
    Retry,
    durable_config,
    ensure_consumer,
    run_consumer,
)

Outcome = Literal["ack", "nak", "term", "none"]
Script = Callable[["ScriptedWorker", RunJob, int], Awaitable[Outcome]]


async def announce_worker(bus: Bus, models: list[str], worker_id: str = "w-test") -> None:
    """Put a heartbeat in ``workers`` so the models count as served."""
    beat = WorkerHeartbeat(
        worker_id=worker_id,
        models=models,
        servers=[ServerStatus(url="http://127.0.0.1:1", healthy=True, busy=False)],
        started_at=utcnow(),
    )
    kv = await bus.kv(bus.names.bucket("workers"))
    await kv.put(worker_id, beat.to_bytes())


class ScriptedWorker:
    """Pulls one model's work like a comfy-worker and plays ``script`` for each delivery."""

    def __init__(
        self,
        bus: Bus,
        model: str,
        script: Script,
        *,
        max_deliver: int = 3,
        ack_wait_s: float = 5.0,
        concurrency: int = 4,
        worker_id: str = "w-test",
    ) -> None:
        self.bus = bus
        self.model = model
        self.script = script
        self.max_deliver = max_deliver
        self.ack_wait_s = ack_wait_s
        self.concurrency = concurrency
        self.worker_id = worker_id
        self.deliveries: list[tuple[str, int]] = []
        self.skipped: list[str] = []
        self.cancels: dict[str, asyncio.Event] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Announce, bind ``work-<model>``, listen for cancels, start pulling."""
        names = self.bus.names
        await announce_worker(self.bus, [self.model], self.worker_id)
        config = durable_config(
            names.work_consumer(self.model),
            names.work(self.model),
            ack_wait_s=self.ack_wait_s,
            max_deliver=self.max_deliver,
        )
        await ensure_consumer(self.bus, names.stream("WORK"), config)
        self._sub = await self.bus.nc.subscribe(names.all_cancels(), cb=self._on_cancel)
        self._task = asyncio.create_task(self._pull())
        self._beat = asyncio.create_task(self._heartbeat())

    async def stop(self) -> None:
        """Stop pulling (in-flight scripts are cancelled, which naks their messages)."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        if self._sub is not None:
            await self._sub.unsubscribe()

    def cancelled(self, job_id: str) -> asyncio.Event:
        """Set when ``control.cancel.<job_id>`` is heard."""
        return self.cancels.setdefault(job_id, asyncio.Event())

    async def report(self, job: RunJob, kind: RunEventKind, attempt: int, **fields: Any) -> None:
        """Publish a run event as the worker does (message id ``<job>:<attempt>:<kind>``)."""
        event = RunEvent(
            job_id=job.job_id, kind=kind, attempt=attempt, worker_id=self.worker_id, **fields
        )
        msg_id = f"{job.job_id}:{attempt}:{kind}"
        if kind == "progress" and event.progress is not None:
            msg_id += f":{event.progress.percent:g}"
        await self.bus.publish(self.bus.names.run_event(job.job_id, kind), event, msg_id=msg_id)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(3)
            await announce_worker(self.bus, [self.model], self.worker_id)

    async def _on_cancel(self, msg: Msg) -> None:
        command = CancelCommand.from_bytes(msg.data)
        self.cancelled(command.job_id).set()

    async def _pull(self) -> None:
        names = self.bus.names
        await run_consumer(
            self.bus,
            names.stream("WORK"),
            names.work_consumer(self.model),
            self._one,
            self._stop,
            concurrency=self.concurrency,
            max_batch=1,
            fetch_timeout_s=0.5,
            grace_s=0,
        )

    async def _one(self, delivery: Delivery) -> None:
        job = delivery.parse(RunJob)
        attempt = delivery.num_delivered
        self.deliveries.append((job.job_id, attempt))
        # As the worker does: a job whose record says it ended (or is being cancelled) is
        # skipped; one with no record yet runs (its work can come before its record).
        found = await JobStore(self.bus).get(job.job_id)
        if found is not None and (found.record.status.terminal or found.record.cancel_requested):
            self.skipped.append(job.job_id)
            return
        outcome = await self.script(self, job, attempt)
        if outcome == "nak":
            raise Retry("scripted nak", delay=0.2)
        if outcome == "term":
            raise Reject("scripted term")
        if outcome == "none":
            await self._stop.wait()  # a dead worker says nothing; stopping naks the message
            raise Retry("the scripted worker stopped", delay=0)


def output_of(job: RunJob, index: int = 0) -> OutputRef:
    """An output reference as the worker would report it."""
    return OutputRef(
        index=index,
        key=f"{job.output_prefix}{index}.png",
        kind=OutputKind.IMAGE,
        content_type="image/png",
        size=123,
    )


def succeed(gpu_seconds: float = 1.5, delay_s: float = 0.0) -> Script:
    """A script that starts, reports progress, completes and acks."""

    async def play(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        await worker.report(job, "started", attempt)
        await worker.report(job, "progress", attempt, progress=Progress(percent=50))
        if delay_s:
            await asyncio.sleep(delay_s)
        await worker.report(
            job, "completed", attempt, outputs=[output_of(job)], gpu_seconds=gpu_seconds
        )
        return "ack"

    return play


def succeed_within_delay(gpu_seconds: float = 0.01, started_s_ago: float = 0.05) -> Script:
    """A script whose run ended within the worker's started delay: no ``started``, only a
    ``completed`` that says when the run began."""

    async def play(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        began = utcnow() - timedelta(seconds=started_s_ago)
        await worker.report(
            job,
            "completed",
            attempt,
            outputs=[output_of(job)],
            gpu_seconds=gpu_seconds,
            started_at=began,
        )
        return "ack"

    return play
