"""``python -m comfyline.orchestrator`` killed with SIGKILL mid-run and restarted loses nothing."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

from comfyline.contracts import JobState, utcnow
from comfyline.orchestrator import JobStore, UsageBook
from comfyline.runtime import Bus, NatsSettings
from comfyline.testkit.orchestrator import (
    ScriptedWorker,
    event_counts,
    orchestrator_process,
    orchestrator_ready,
    submit,
    succeed,
    until,
    wait_record,
)

BEFORE, DURING = 60, 20


async def states(bus: Bus, job_ids: list[str]) -> Counter[str]:
    """How many of ``job_ids`` are in each state."""
    store = JobStore(bus)
    found = [await store.get(job_id) for job_id in job_ids]
    return Counter(f.record.status.value if f else "missing" for f in found)


async def test_sigkill_mid_run_then_restart_loses_nothing(
    bus: Bus, nats_settings: NatsSettings, namespace: str, tmp_path: Path
) -> None:
    """Kill -9 while jobs are in every state; jobs submitted while it is down wait; after the
    restart every job ends once, with one event of each kind and one usage count."""
    # Runs long enough that the kill lands with jobs in every state, however busy the machine:
    # 60 jobs take some two seconds, the kill comes once three rounds of eight have started.
    worker = ScriptedWorker(bus, "cpu-smoke", succeed(delay_s=0.25), concurrency=8)
    await worker.start()
    log = tmp_path / "orchestrator.log"
    job_ids: list[str] = []
    try:
        with orchestrator_process(nats_settings, bus.names.namespace, log) as first:
            await until(lambda: orchestrator_ready(bus), timeout_s=30, every_s=0.1)
            job_ids += [await submit(bus, "cpu-smoke", {}) for _ in range(BEFORE)]
            await until(lambda: len(worker.deliveries) >= 24, timeout_s=30)
            first.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL
        at_kill = await states(bus, job_ids)
        assert sum(at_kill.values()) - at_kill["succeeded"] > 0, f"nothing in flight: {at_kill}"
        job_ids += [await submit(bus, "cpu-smoke", {}) for _ in range(DURING)]

        with orchestrator_process(nats_settings, bus.names.namespace, log) as second:
            async with asyncio.timeout(60):
                records = [await wait_record(bus, job_id, timeout_s=60) for job_id in job_ids]
            day = utcnow().date().isoformat()
            usage = UsageBook(bus, JobStore(bus))

            async def all_counted() -> bool:
                total = await usage.get("u1", "cpu-smoke", day)
                return total is not None and total.jobs >= len(job_ids)

            await until(all_counted, timeout_s=30)
            second.send_signal(signal.SIGTERM)  # a clean stop: drains and exits 0
            assert await asyncio.to_thread(second.wait, 20) == 0, log.read_text()[-3000:]
    finally:
        await worker.stop()

    assert [r.status for r in records] == [JobState.SUCCEEDED] * (BEFORE + DURING), log.read_text()
    counts = await event_counts(bus)
    for job_id in job_ids:
        for kind in ("submitted", "dispatched", "completed"):
            assert counts[f"{job_id}.{kind}"] == 1, (job_id, kind)
    deliveries = Counter(job_id for job_id, _ in worker.deliveries)
    assert sorted(set(deliveries)) == sorted(job_ids)
    total = await UsageBook(bus, JobStore(bus)).get("u1", "cpu-smoke", day)
    assert total is not None and total.jobs == total.succeeded == BEFORE + DURING
