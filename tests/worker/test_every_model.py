"""Every catalogue model runs to completion on the simulator, and its outputs are real files."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from comfyline.catalogue import Catalogue
from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import JobState, OutputKind, RunEvent
from comfyline.runtime import Bus, ObjectStore
from comfyline.testkit.fixtures import stored

from .helpers import (
    RunWatch,
    Workers,
    flac_bytes,
    mask_bytes,
    mp4_bytes,
    png_bytes,
    probe_media,
    publish_job,
    put_record,
    upload_asset,
)


async def run_to_end(bus: Bus, runs: RunWatch, model: str, data: dict[str, Any]) -> RunEvent:
    job = await publish_job(bus, model, data, record=True)
    done = await runs.wait_for(job.job_id, "completed", "failed", timeout=60)
    assert done.kind == "completed", f"{model}: {done.error}"
    assert done.outputs, model
    await put_record(bus, job, JobState.SUCCEEDED, outputs=done.outputs)
    return done


async def check_image(store: ObjectStore, event: RunEvent, size: tuple[int, int] | None) -> None:
    for out in event.outputs:
        assert out.kind == OutputKind.IMAGE and out.content_type == "image/png"
        picture = Image.open(io.BytesIO(await stored(store, out.key)))
        picture.load()
        assert (out.width, out.height) == picture.size
        if size:
            assert picture.size == size


async def check_media(store: ObjectStore, event: RunEvent, kind: OutputKind) -> dict[str, Any]:
    [out] = event.outputs
    assert out.kind == kind
    data = await stored(store, out.key)
    assert out.size == len(data)
    facts = probe_media(data)
    if kind == OutputKind.AUDIO:
        assert out.content_type == "audio/flac" and facts["streams"] == ["audio"]
    else:
        assert out.content_type == "video/mp4" and "video" in facts["streams"]
        assert facts["frames"] > 1 and facts["size"] == (out.width, out.height)
    assert out.duration_s is not None and facts["duration"] is not None
    assert out.duration_s == pytest.approx(facts["duration"], rel=0.1, abs=0.1)
    return facts


async def test_every_model_runs_and_makes_valid_files(
    bus: Bus, store: ObjectStore, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    workers([sim.url])
    covered: set[str] = set()

    smoke = await run_to_end(bus, runs, "cpu-smoke", {"width": 80, "height": 40, "batch_size": 2})
    await check_image(store, smoke, (80, 40))
    assert [o.index for o in smoke.outputs] == [0, 1]
    covered.add("cpu-smoke")

    for preset in ("fast", "high"):
        image = await run_to_end(
            bus,
            runs,
            "txt2img-sdxl",
            {"prompt": "a red fox", "width": 256, "height": 192, "preset": preset, "steps": 2},
        )
        await check_image(store, image, (256, 192))
    covered.add("txt2img-sdxl")

    source = await upload_asset(store, png_bytes(128, 96), "png", "image/png")
    mask = await upload_asset(store, mask_bytes(128, 96), "png", "image/png")
    inpaint = await run_to_end(
        bus,
        runs,
        "inpaint-sdxl",
        {"image": source, "mask": mask, "prompt": "a bench", "strength": 0.7, "steps": 2},
    )
    await check_image(store, inpaint, (128, 96))
    covered.add("inpaint-sdxl")

    portrait = await run_to_end(
        bus, runs, "portrait", {"description": "a sailor", "style": "comic", "gender": "male"}
    )
    await check_image(store, portrait, (832, 1216))
    covered.add("portrait")

    voice = await upload_asset(store, flac_bytes(2.0), "flac", "audio/flac")
    speech = await run_to_end(
        bus, runs, "tts", {"text": "Hello from the test.", "voice": voice, "speed": 1.0}
    )
    await check_media(store, speech, OutputKind.AUDIO)
    covered.add("tts")

    # a portrait and a speech of the same owner feed a lip-sync job
    talk = await run_to_end(
        bus,
        runs,
        "lipsync",
        {
            "image": {"job": portrait.job_id, "output": 0},
            "audio": {"job": speech.job_id},
            "resolution": 256,
            "steps": 2,
            "fps": 10,
            "max_duration_s": 2,
        },
    )
    await check_media(store, talk, OutputKind.VIDEO)
    covered.add("lipsync")

    clip = await upload_asset(store, mp4_bytes(1.0, 25), "mp4", "video/mp4")
    resync = await run_to_end(
        bus, runs, "lipsync-video", {"video": clip, "audio": {"job": speech.job_id}, "steps": 2}
    )
    await check_media(store, resync, OutputKind.VIDEO)
    covered.add("lipsync-video")

    for preset in ("fast", "high"):
        video = await run_to_end(
            bus,
            runs,
            "img2vid-wan",
            {
                "image": source,
                "prompt": "waves",
                "preset": preset,
                "duration_s": 1,
                "fps": 8,
                "resolution": "square",
            },
        )
        facts = await check_media(store, video, OutputKind.VIDEO)
        assert facts["size"] == (640, 640) and facts["frames"] == 9  # 1 s at 8 fps -> 4n+1
    covered.add("img2vid-wan")

    video = await run_to_end(
        bus,
        runs,
        "txt2vid-wan",
        {"prompt": "a paper boat", "duration_s": 1, "fps": 8, "resolution": "480p"},
    )
    facts = await check_media(store, video, OutputKind.VIDEO)
    assert facts["size"] == (832, 480)
    covered.add("txt2vid-wan")

    assert covered == {t.name for t in Catalogue.builtin() if t.engine == "comfyui"}


async def test_a_job_output_of_another_owner_is_not_an_input(
    bus: Bus, store: ObjectStore, sim: SimulatorProcess, workers: Workers, runs: RunWatch
) -> None:
    workers([sim.url])
    smoke = await run_to_end(bus, runs, "cpu-smoke", {"width": 32, "height": 32})
    mask = await upload_asset(store, mask_bytes(32, 32), "png", "image/png", owner="someone-else")
    job = await publish_job(
        bus,
        "inpaint-sdxl",
        {"image": {"job": smoke.job_id}, "mask": mask, "prompt": "x"},
        owner="someone-else",
    )
    failed = await runs.wait_for(job.job_id, "failed", "completed")
    assert failed.kind == "failed" and failed.final
    assert failed.error is not None and failed.error.code == "asset_not_found"
    assert "no job" in failed.error.message
