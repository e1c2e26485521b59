"""Pipelines through the gateway: built-in templates on two simulated ComfyUI servers, an invalid
pipeline refused before any GPU time, cancel mid-pipeline, and a failing step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from comfyline.catalogue import Catalogue
from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import EventKind, JobState, ModelTemplate, PipelineStep
from comfyline.testkit.fixtures import stored
from tests.worker.helpers import flac_bytes

from .conftest import Services, Stack, publish_models

Sims = Callable[..., SimulatorProcess]


async def test_talking_portrait_runs_portrait_and_speech_at_once_then_lipsync(
    stack: Stack, services: Services, sims: Sims
) -> None:
    slow = ("--step-time", "0.05")
    await services.workers([sims(*slow).url, sims(*slow).url])
    await services.orchestrator()
    voice = await stack.upload(flac_bytes(2.0), "voice.flac", "audio/flac")

    listed = await stack.http.get("/v1/models/talking-portrait", headers=stack.headers)
    assert listed.status_code == 200
    model = listed.json()
    assert model["engine"] == "pipeline" and model["outputs"] == ["video"]
    assert [s["name"] for s in model["steps"]] == ["portrait", "speech", "lipsync"]
    assert set(model["parameters"]["required"]) == {"description", "text"}

    response = await stack.submit(
        "talking-portrait",
        {
            "description": "a lighthouse keeper",
            "text": "Hello there.",
            "voice": voice,
            "resolution": 256,
            "max_duration_s": 2,
        },
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    done = await stack.wait(job_id)
    assert done.status is JobState.SUCCEEDED, done.error

    steps = {s.name: s for s in done.steps}
    assert [s.status for s in done.steps] == ["succeeded"] * 3
    portrait, speech, lipsync = [
        await stack.record(steps[n].job_id or "") for n in ("portrait", "speech", "lipsync")
    ]
    assert portrait and speech and lipsync
    # both first steps were dispatched before either finished: they ran at the same time
    assert portrait.finished_at and speech.finished_at
    first_end = min(portrait.finished_at, speech.finished_at)
    assert portrait.dispatched_at and portrait.dispatched_at < first_end
    assert speech.dispatched_at and speech.dispatched_at < first_end
    assert portrait.started_at and speech.started_at
    assert max(portrait.started_at, speech.started_at) < first_end
    servers = {portrait.attempt_log[0].server, speech.attempt_log[0].server}
    assert len(servers) == 2  # one on each simulated server
    # the lipsync step got both outputs, by reference to the steps' jobs
    assert lipsync.input["image"] == {"job": portrait.id, "output": 0}
    assert lipsync.input["audio"] == {"job": speech.id, "output": 0}
    assert lipsync.dispatched_at and lipsync.dispatched_at >= first_end
    assert lipsync.parent is not None and lipsync.parent.job_id == job_id
    # the pipeline's output is the lipsync video; cost per step and in total
    assert [o.key for o in done.outputs] == [o.key for o in lipsync.outputs]
    assert done.outputs[0].kind.value == "video"
    for state, child in zip(done.steps, (portrait, speech, lipsync), strict=True):
        assert state.cost == child.cost and state.cost.amount > 0
    assert done.cost.amount == pytest.approx(sum(s.cost.amount for s in done.steps))

    events = await stack.events(job_id)
    kinds = [e.kind for e in events]
    assert kinds[0] is EventKind.SUBMITTED and kinds[-1] is EventKind.COMPLETED
    step_events = [e for e in events if e.kind is EventKind.STEP]
    assert {e.step.name for e in step_events if e.step} == {"portrait", "speech", "lipsync"}
    percents = [e.progress.percent for e in step_events if e.progress]
    assert percents == sorted(percents) and 0 < percents[-1] <= 100
    assert {s.name for s in events[-1].steps} == {"portrait", "speech", "lipsync"}
    assert all(s.outputs for s in events[-1].steps)

    public = await stack.job(job_id)
    assert [s["status"] for s in public["steps"]] == ["succeeded"] * 3
    assert public["steps"][0]["outputs"][0]["content_url"].endswith(
        f"/v1/jobs/{portrait.id}/outputs/0/content"
    )
    usage_slot = await stack.submit("cpu-smoke", {})
    assert usage_slot.status_code == 202  # the steps took no active-job slots of their own
    plain = await stack.wait(usage_slot.json()["id"])
    assert plain.status is JobState.SUCCEEDED, plain.error

    # The pipelines consumer is handed the steps' events, on their own subjects, and no other
    # job's: the plain job's events are only on jobs.…
    names = stack.bus.names
    told = await stack.bus.js.stream_info(
        names.stream("JOBS"), subjects_filter=names.all_step_events()
    )
    subjects = told.state.subjects or {}
    assert {s.split(".")[-3] for s in subjects} == {job_id}
    assert {s.split(".")[-2] for s in subjects} == {portrait.id, speech.id, lipsync.id}
    assert {s.split(".")[-1] for s in subjects} >= {"started", "completed"}
    assert all(s.split(".")[-2] != plain.id for s in subjects)
    consumer = await stack.bus.js.consumer_info(
        names.stream("JOBS"), names.consumer("orchestrator-pipelines")
    )
    assert consumer.config.filter_subjects == [names.all_step_events()]
    assert consumer.num_pending == 0


async def test_image_to_clip_end_to_end(stack: Stack, services: Services, sims: Sims) -> None:
    await services.workers([sims().url])
    await services.orchestrator()
    response = await stack.submit(
        "image-to-clip",
        {
            "prompt": "a paper boat on a pond",
            "width": 512,
            "height": 512,
            "duration_s": 1,
            "fps": 8,
            "resolution": "square",
        },
    )
    assert response.status_code == 202, response.text
    done = await stack.wait(response.json()["id"])
    assert done.status is JobState.SUCCEEDED, done.error
    image, clip = [await stack.record(s.job_id or "") for s in done.steps]
    assert image and clip
    assert image.model == "txt2img-sdxl" and clip.model == "img2vid-wan"
    assert image.input["prompt"] == "a paper boat on a pond" and image.input["width"] == 512
    assert clip.input["image"] == {"job": image.id, "output": 0}
    assert clip.started_at and image.finished_at and clip.started_at >= image.finished_at
    [video] = done.outputs
    assert video.kind.value == "video" and video.key == clip.outputs[0].key
    assert len(await stored(stack.store, video.key)) == video.size > 0


def _pipeline(name: str, steps: list[PipelineStep], **params: object) -> ModelTemplate:
    return ModelTemplate(
        name=name,
        version=1,
        kind="pipeline",
        title=name,
        description="a test pipeline",
        parameters={
            "type": "object",
            "properties": {"prompt": {"type": "string"}, **params},
        },
        outputs=[{"node": steps[-1].name, "kind": "video"}],
        steps=steps,
    )


@pytest.mark.parametrize(
    ("template", "code"),
    [
        (
            _pipeline(
                "loop",
                [
                    PipelineStep(
                        name="a",
                        model="img2vid-wan",
                        input={"image": {"step": "b"}, "prompt": {"input": "prompt"}},
                    ),
                    PipelineStep(
                        name="b",
                        model="img2vid-wan",
                        input={"image": {"step": "a"}, "prompt": {"input": "prompt"}},
                    ),
                ],
            ),
            "pipeline_cycle",
        ),
        (
            _pipeline(
                "dangling",
                [
                    PipelineStep(
                        name="a", model="txt2img-sdxl", input={"prompt": {"input": "nope"}}
                    ),
                ],
            ),
            "pipeline_unknown_reference",
        ),
        (
            _pipeline(
                "mismatch",
                [
                    PipelineStep(name="a", model="tts", input={"text": {"input": "prompt"}}),
                    PipelineStep(
                        name="b",
                        model="img2vid-wan",
                        input={"image": {"step": "a"}, "prompt": {"input": "prompt"}},
                    ),
                ],
            ),
            "pipeline_kind_mismatch",
        ),
    ],
)
async def test_an_invalid_pipeline_is_refused_before_any_gpu_time(
    stack: Stack, template: ModelTemplate, code: str
) -> None:
    await publish_models(stack.bus, template)
    for _ in range(100):  # until the gateway's live catalogue has it
        response = await stack.submit(template.name, {"prompt": "x"})
        if response.json().get("code") != "unknown_model":
            break
        await asyncio.sleep(0.1)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code, response.json()
    info = await stack.bus.js.stream_info(stack.bus.names.stream("WORK"))
    assert info.state.messages == 0
    jobs = await stack.bus.js.stream_info(stack.bus.names.stream("JOBS"))
    assert jobs.state.messages == 0  # nothing was even submitted


async def test_cancel_mid_pipeline_stops_running_steps_and_skips_the_rest(
    stack: Stack, services: Services, sims: Sims
) -> None:
    slow = ("--step-time", "0.3")
    await services.workers([sims(*slow).url, sims(*slow).url])
    await services.orchestrator()
    response = await stack.submit(  # no voice: the speech uses the built-in default
        "talking-portrait", {"description": "a sailor", "text": "Ahoy."}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    await stack.wait(
        job_id,
        lambda r: sum(s.status == "running" for s in r.steps) == 2,
        timeout_s=60,
    )
    cancelled = await stack.http.delete(f"/v1/jobs/{job_id}", headers=stack.headers)
    assert cancelled.status_code in (200, 202), cancelled.text
    done = await stack.wait(job_id)
    assert done.status is JobState.CANCELLED
    children = {s.name: s for s in done.steps}
    assert children["lipsync"].status == "skipped" and children["lipsync"].job_id is None
    for name in ("portrait", "speech"):
        child = await stack.wait(children[name].job_id or "", timeout_s=30)
        assert child.status is JobState.CANCELLED, name
        if name == "speech":
            default = Catalogue.builtin().get("tts").parameters["properties"]["voice"]["default"]
            assert child.input["voice"] == default
    final = await stack.wait(
        job_id, lambda r: all(s.status != "running" for s in r.steps), timeout_s=30
    )
    assert {s.status for s in final.steps} == {"cancelled", "skipped"}


async def test_a_failing_middle_step_fails_the_pipeline_and_keeps_finished_outputs(
    stack: Stack, services: Services, sims: Sims
) -> None:
    failing = ("--fail-node", "F5TTSAudioInputs", "--step-time", "0.02")
    await services.workers([sims(*failing).url, sims(*failing).url])
    await services.orchestrator()
    voice = await stack.upload(flac_bytes(2.0), "voice.flac", "audio/flac")
    response = await stack.submit(
        "talking-portrait", {"description": "a sailor", "text": "Ahoy.", "voice": voice}
    )
    job_id = response.json()["id"]
    done = await stack.wait(job_id)
    assert done.status is JobState.FAILED
    assert done.error is not None and done.error.details["step"] == "speech"
    speech_job = await stack.record(done.error.details["job_id"])
    assert speech_job is not None and speech_job.error is not None
    assert done.error.code == speech_job.error.code
    # the portrait, running beside it, is either finished (outputs kept) or was cancelled
    final = await stack.wait(
        job_id, lambda r: all(s.status not in ("queued", "running") for s in r.steps)
    )
    steps = {s.name: s for s in final.steps}
    assert steps["lipsync"].status == "skipped"
    assert steps["portrait"].status in ("succeeded", "cancelled")
    if steps["portrait"].status == "succeeded":
        assert steps["portrait"].outputs
        assert len(await stored(stack.store, steps["portrait"].outputs[0].key)) > 0


async def test_an_input_that_would_fail_a_step_is_refused_before_any_step_runs(
    stack: Stack,
) -> None:
    loose = _pipeline(  # "prompt" is optional here, but the image step requires one
        "loose",
        [
            PipelineStep(name="image", model="txt2img-sdxl", input={"prompt": {"input": "prompt"}}),
            PipelineStep(
                name="clip",
                model="img2vid-wan",
                input={"image": {"step": "image"}, "prompt": "waves"},
            ),
        ],
    )
    await publish_models(stack.bus, loose)
    for _ in range(100):  # until the gateway's live catalogue has it
        response = await stack.submit("loose", {})
        if response.json().get("code") != "unknown_model":
            break
        await asyncio.sleep(0.1)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error" and body["details"]["step"] == "image"
    assert body["details"]["errors"][0]["field"] == "prompt"
    jobs = await stack.bus.js.stream_info(stack.bus.names.stream("JOBS"))
    assert jobs.state.messages == 0
