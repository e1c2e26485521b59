"""Two orchestrators on the same streams: 200 jobs, each finished exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from comfyline.catalogue import Catalogue
from comfyline.contracts import ErrorCode, JobError, JobState, RunJob, utcnow
from comfyline.orchestrator import JobStore, Orchestrator, UsageBook
from comfyline.runtime import Bus, Delivery, NatsSettings
from comfyline.testkit.orchestrator import (
    Outcome,
    ScriptedWorker,
    event_counts,
    output_of,
    quick_settings,
    submit,
    until,
    wait_record,
)

JOBS = 200
FLAKY = JOBS // 10  # every 10th job fails transiently on its first delivery
TRANSIENT = JobError(code=ErrorCode.COMFY_UNAVAILABLE, message="restarting")


Handler = Callable[[Delivery], Coroutine[Any, Any, None]]


def counting(handler: Handler, seen: Counter[str], name: str) -> Handler:
    """``handler``, counting its calls in ``seen[name]``."""

    async def wrapped(delivery: Delivery) -> None:
        seen[name] += 1
        await handler(delivery)

    return wrapped


async def test_two_orchestrators_finish_200_jobs_exactly_once(
    bus: Bus, nats_settings: NatsSettings, namespace: str
) -> None:
    """Shared durables split the work; CAS and message ids keep every job's story single."""
    flaky: set[str] = set()

    async def script(worker: ScriptedWorker, job: RunJob, attempt: int) -> Outcome:
        await worker.report(job, "started", attempt)
        if job.job_id in flaky and attempt == 1:
            await worker.report(job, "failed", attempt, error=TRANSIENT, final=False)
            return "nak"
        await worker.report(job, "completed", attempt, outputs=[output_of(job)], gpu_seconds=1.0)
        if hash(job.job_id) % 7 == 0:  # a worker that reports twice (its ack was lost)
            await worker.report(job, "completed", attempt, outputs=[output_of(job)])
        return "ack"

    catalogue = Catalogue.builtin()
    seen: list[Counter[str]] = [Counter(), Counter()]
    orchestrators = []
    for i in range(2):
        bus_i = await Bus.connect(nats_settings, bus.names, f"orchestrator-{i}")
        orch = Orchestrator(bus_i, catalogue, quick_settings(nats_settings, namespace))
        orch.dispatcher.handle = counting(orch.dispatcher.handle, seen[i], "submissions")  # type: ignore[method-assign,assignment]
        orch.runs.handle = counting(orch.runs.handle, seen[i], "runs")  # type: ignore[method-assign,assignment]
        orchestrators.append((bus_i, orch))
    worker = ScriptedWorker(bus, "cpu-smoke", script, concurrency=16, ack_wait_s=5)
    day = utcnow().date().isoformat()
    usage_of = UsageBook(bus, JobStore(bus))

    async def all_counted() -> bool:
        total = await usage_of.get("u1", "cpu-smoke", day)
        return total is not None and total.jobs >= JOBS

    try:
        await asyncio.gather(*(orch.start() for _, orch in orchestrators))
        await worker.start()
        job_ids = []
        for n in range(JOBS):
            job_id = await submit(bus, "cpu-smoke", {"width": 16 + n % 8})
            job_ids.append(job_id)
            if n % 10 == 0:
                flaky.add(job_id)
        records = [await wait_record(bus, job_id, timeout_s=60) for job_id in job_ids]
        await until(all_counted, timeout_s=20)  # usage is fed from JOBS, a little behind
    finally:
        await worker.stop()
        for bus_i, orch in orchestrators:
            await orch.stop()
            await bus_i.close()

    assert [r.status for r in records] == [JobState.SUCCEEDED] * JOBS
    assert sum(r.attempts for r in records) == JOBS + FLAKY
    counts = await event_counts(bus)
    for job_id in job_ids:
        for kind in ("submitted", "dispatched", "completed"):
            assert counts[f"{job_id}.{kind}"] == 1, (job_id, kind)
        assert f"{job_id}.failed" not in counts
        assert counts[f"{job_id}.started"] == (2 if job_id in flaky else 1)
    deliveries = Counter(job_id for job_id, _ in worker.deliveries)
    assert all(deliveries[j] == (2 if j in flaky else 1) for j in job_ids)  # never re-dispatched
    assert all(s["submissions"] > 0 and s["runs"] > 0 for s in seen)  # both did work

    total = await usage_of.get("u1", "cpu-smoke", day)
    assert total is not None and total.jobs == JOBS
    assert total.succeeded == JOBS
    # 1 s per completed run, plus the wall time of each first, failed, unmeasured attempt
    assert total.gpu_seconds == pytest.approx(sum(r.cost.gpu_seconds for r in records))
    assert JOBS * 1.0 <= total.gpu_seconds < JOBS * 1.0 + FLAKY * 5
