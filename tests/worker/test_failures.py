"""ComfyUI failures reach the job as stable codes; permanent ones are not retried."""

from __future__ import annotations

import asyncio

from comfyline.catalogue import Catalogue
from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import ModelTemplate
from comfyline.runtime import Bus, NatsSettings, ObjectStore, S3Settings

from .helpers import RunWatch, SimFactory, Workers, heartbeats, make_job, publish_job


async def settled(bus: Bus, model: str) -> tuple[int, int]:
    """The work consumer's pending and unacked counts, once nothing is unacked (or after 10 s):
    the worker reports a failure before it terminates the message."""
    for _ in range(100):
        info = await bus.js.consumer_info(bus.names.stream("WORK"), bus.names.work_consumer(model))
        if not info.num_ack_pending:
            break
        await asyncio.sleep(0.1)
    return info.num_pending, info.num_ack_pending


async def test_a_node_error_fails_the_job_with_the_node_and_no_retry(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    sim: SimulatorProcess = sim_factory("--fail-node", "SaveImage")
    workers([sim.url])
    job = await publish_job(bus, "cpu-smoke", {"width": 16, "height": 16})
    failed = await runs.wait_for(job.job_id, "failed", "completed")
    assert failed.kind == "failed" and failed.final and failed.attempt == 1
    assert failed.error is not None
    assert failed.error.code == "comfy_execution_error"
    assert (failed.error.node_id, failed.error.node_type) == ("2", "SaveImage")
    assert "Simulated failure in SaveImage" in failed.error.message
    await asyncio.sleep(1.0)
    assert len(runs.of(job.job_id, "failed")) == 1, "terminated, not redelivered"
    assert await settled(bus, "cpu-smoke") == (0, 0)


def with_missing_checkpoint() -> Catalogue:
    """txt2img whose catalogue entry forgot a model file this server lacks (a stale entry)."""
    base = Catalogue.builtin().get("txt2img-sdxl")
    graph = {k: {**v, "inputs": dict(v["inputs"])} for k, v in base.graph.items()}
    graph["4"]["inputs"]["ckpt_name"] = "not_installed_v9.safetensors"
    stale: ModelTemplate = base.model_copy(
        update={
            "graph": graph,
            "bindings": [b for b in base.bindings if b.param != "checkpoint"],
            "required_models": [],
        }
    )
    return Catalogue([stale, Catalogue.builtin().get("cpu-smoke")])


async def test_a_missing_model_file_fails_with_its_code(
    bus: Bus,
    store: ObjectStore,
    sim: SimulatorProcess,
    nats_settings: NatsSettings,
    s3_settings: S3Settings,
    runs: RunWatch,
) -> None:
    from .helpers import start_worker

    running = start_worker(
        bus, store, nats_settings, s3_settings, [sim.url], catalogue=with_missing_checkpoint()
    )
    try:
        job = await publish_job(bus, "txt2img-sdxl", {"prompt": "a fox", "width": 64, "height": 64})
        failed = await runs.wait_for(job.job_id, "failed", "completed")
        assert failed.kind == "failed" and failed.final
        assert failed.error is not None and failed.error.code == "comfy_missing_model"
        assert failed.error.node_type == "CheckpointLoaderSimple"
        assert "not_installed_v9.safetensors" in failed.error.message
        assert await settled(bus, "txt2img-sdxl") == (0, 0)
    finally:
        await running.stop()


async def test_a_graph_comfyui_refuses_is_a_validation_failure(
    bus: Bus, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    workers([sim.url])
    job = await publish_job(bus, "cpu-smoke", {"width": 0}, validate=False)
    failed = await runs.wait_for(job.job_id, "failed", "completed")
    assert failed.error is not None and failed.error.code == "comfy_validation"
    assert failed.error.node_id == "1" and "width" in failed.error.message
    assert failed.final


async def test_a_model_no_server_can_run_is_not_bound(
    bus: Bus, sim_factory: SimFactory, workers: Workers, runs: RunWatch
) -> None:
    sim: SimulatorProcess = sim_factory("--disable-node", "F5TTSAudioInputs")
    running = workers([sim.url])
    for _ in range(50):
        if running.worker.servers[0].models:
            break
        await asyncio.sleep(0.1)
    server = running.worker.servers[0]
    assert "tts" not in server.models and "cpu-smoke" in server.models
    assert server.missing["tts"] == ["node F5TTSAudioInputs"]
    assert "tts" not in running.worker.fetcher.bound
    # The heartbeat says why, so the gateway can refuse tts at once and name the class.
    for _ in range(50):
        beats = await heartbeats(bus)
        reported = [s for b in beats.values() for s in b.servers if s.missing]
        if reported:
            break
        await asyncio.sleep(0.1)
    [status] = reported
    assert status.url == sim.url and status.missing["tts"] == ["node F5TTSAudioInputs"]
    assert "cpu-smoke" not in status.missing
    job = await publish_job(bus, "tts", {"text": "hi", "voice": "ast_" + "0" * 26})
    await asyncio.sleep(1.0)
    assert runs.of(job.job_id) == [], "left for a worker that can run it"


async def test_a_job_past_its_deadline_is_not_run(
    bus: Bus, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    from datetime import timedelta

    from comfyline.contracts import utcnow

    late = make_job(
        "cpu-smoke",
        {"width": 16, "height": 16},
        owner="u",
        deadline_at=utcnow() - timedelta(seconds=1),
    )
    job_id = late.job_id
    await bus.publish(bus.names.work("cpu-smoke"), late, msg_id=f"{job_id}:run")
    workers([sim.url])
    failed = await runs.wait_for(job_id, "failed", "completed", "started")
    assert failed.kind == "failed" and failed.final
    assert failed.error is not None and failed.error.code == "deadline_exceeded"
