"""A run's events: ``started`` goes out in the background, yet always before what follows it."""

from __future__ import annotations

import asyncio

from comfyline.contracts import OutputRef, Progress, RunEvent, stream_spec
from comfyline.runtime import Bus
from comfyline.worker.reporter import RunReporter

JOB = "job_01kaxreporter00000000000000"


async def test_started_is_published_before_progress_and_the_final_event(bus: Bus) -> None:
    await bus.ensure_streams([stream_spec(bus.names, "RUNS")])
    reporter = RunReporter(
        bus,
        job_id=JOB,
        attempt=1,
        worker_id="w1",
        server="http://127.0.0.1:1",
        progress_interval_s=0.0,
    )
    await reporter.started("prompt-1")  # returns without waiting for the ack
    reporter.progress(Progress(percent=50))
    stream = bus.names.stream("RUNS")
    for _ in range(100):  # the progress sender publishes it once started is out
        subjects = bus.names.run_event(JOB, "started").rsplit(".", 1)[0] + ".*"
        info = await bus.js.stream_info(stream, subjects_filter=subjects)
        if len(info.state.subjects or {}) == 2:
            break
        await asyncio.sleep(0.05)
    output = OutputRef(
        index=0, key="outputs/u/j/0.png", kind="image", content_type="image/png", size=1
    )
    await reporter.completed([output], gpu_seconds=0.5)

    seqs: dict[str, int] = {}
    for kind in ("started", "progress", "completed"):
        msg = await bus.js.get_last_msg(stream, bus.names.run_event(JOB, kind))
        seqs[kind] = msg.seq or 0
        assert RunEvent.from_bytes(msg.data or b"").prompt_id == "prompt-1"
    assert seqs["started"] < seqs["completed"]
    assert seqs["started"] < seqs["progress"] < seqs["completed"]
