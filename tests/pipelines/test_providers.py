"""The provider worker joins by the contract alone: hosted models through the gateway, inside a
pipeline beside a local ComfyUI step, and clean failures on 429 / 500 (no retry storm).

The hosted APIs are fakes of our own on loopback, in the real APIs' shapes."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from PIL import Image

from comfyline.catalogue import Catalogue
from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import EventKind, JobState, ModelTemplate, PipelineStep
from comfyline.provider import ProviderConfig
from comfyline.testkit.orchestrator import until
from comfyline.testkit.providers import KEY, FakeProviders, serving

from .conftest import Services, Stack

Sims = Callable[..., SimulatorProcess]


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviders]:
    async with serving(FakeProviders()) as running:
        yield running


def configs(fake: FakeProviders, **openai: object) -> dict[str, ProviderConfig]:
    return {
        "openai": ProviderConfig(
            base_url=fake.openai_url,
            api_key=KEY,
            max_retries=2,
            retry_base_s=0.05,
            **openai,
        ),
        "queue": ProviderConfig(base_url=fake.queue_url, api_key=KEY, poll_interval_s=0.05),
    }


async def until_available(stack: Stack, model: str) -> dict[str, object]:
    for _ in range(100):
        response = await stack.http.get(f"/v1/models/{model}", headers=stack.headers)
        body: dict[str, object] = response.json()
        if response.status_code == 200 and body["availability"]["available"]:  # type: ignore[index]
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{model} never became available")


async def test_hosted_models_run_through_the_gateway(
    stack: Stack, services: Services, fake: FakeProviders
) -> None:
    await services.provider_worker(configs(fake))
    await services.orchestrator()
    model = await until_available(stack, "dalle3")
    assert model["engine"] == "provider" and model["provider"] == "openai"
    status = (await stack.http.get("/v1/status", headers=stack.headers)).json()
    assert status["providers"]["openai"] == {"available": True, "workers": 1, "models": ["dalle3"]}
    assert status["providers"]["queue"]["models"] == ["flux1"]

    response = await stack.submit("dalle3", {"prompt": "a red kite", "size": "1792x1024"})
    assert response.status_code == 202, response.text
    done = await stack.wait(response.json()["id"], timeout_s=30)
    assert done.status is JobState.SUCCEEDED, done.error
    [out] = done.outputs
    picture = Image.open(io.BytesIO(await stack.store.get_bytes(out.key)))
    assert picture.size == (out.width, out.height) == (64, 36)
    assert done.attempt_log[0].server == fake.openai_url and done.cost.amount > 0
    [call] = fake.api_calls("/openai")
    assert call.status == 200

    queued = await stack.submit("flux1", {"prompt": "a lighthouse", "seed": 7})
    flux = await stack.wait(queued.json()["id"], timeout_s=30)
    assert flux.status is JobState.SUCCEEDED, flux.error
    assert (await stack.store.stat(flux.outputs[0].key)).size == flux.outputs[0].size
    request = next(iter(fake.requests.values()))
    assert request.model == "flux/dev" and request.body["seed"] == 7 and request.polls >= 3
    kinds = [e.kind for e in await stack.events(flux.id)]
    assert EventKind.PROGRESS in kinds and kinds[-1] is EventKind.COMPLETED


async def test_a_pipeline_runs_a_hosted_image_then_a_local_video(
    stack: Stack, services: Services, fake: FakeProviders, sims: Sims
) -> None:
    hosted = ModelTemplate(
        name="hosted-clip",
        version=1,
        kind="pipeline",
        title="Hosted image to clip",
        description="DALL-E 3, then WAN image-to-video on our own servers.",
        parameters={
            "type": "object",
            "additionalProperties": False,
            "required": ["prompt"],
            "properties": {"prompt": {"type": "string", "minLength": 1}},
        },
        outputs=[{"node": "clip", "kind": "video"}],
        steps=[
            PipelineStep(name="image", model="dalle3", input={"prompt": {"input": "prompt"}}),
            PipelineStep(
                name="clip",
                model="img2vid-wan",
                input={
                    "image": {"step": "image", "output": 0},
                    "prompt": {"input": "prompt"},
                    "duration_s": 1,
                    "fps": 8,
                },
            ),
        ],
    )
    services.catalogue = Catalogue([*Catalogue.builtin(), hosted])
    await services.provider_worker(configs(fake))
    await services.workers([sims().url])
    await services.orchestrator()
    await until_available(stack, "hosted-clip")
    response = await stack.submit("hosted-clip", {"prompt": "a kite over the sea"})
    assert response.status_code == 202, response.text
    done = await stack.wait(response.json()["id"])
    assert done.status is JobState.SUCCEEDED, done.error
    image, clip = [await stack.record(s.job_id or "") for s in done.steps]
    assert image and clip
    assert image.attempt_log[0].worker_id == "provider-1"
    assert clip.attempt_log[0].worker_id == "w1"
    assert clip.input["image"] == {"job": image.id, "output": 0}
    assert done.outputs[0].kind.value == "video"
    assert done.cost.amount == pytest.approx(image.cost.amount + clip.cost.amount)


async def test_a_429_is_retried_after_its_retry_after_then_succeeds(
    stack: Stack, services: Services, fake: FakeProviders
) -> None:
    await services.provider_worker(configs(fake))
    await services.orchestrator()
    await until_available(stack, "dalle3")
    fake.fail_next(2, 429, retry_after=0.4)
    response = await stack.submit("dalle3", {"prompt": "a red kite"})
    done = await stack.wait(response.json()["id"], timeout_s=30)
    assert done.status is JobState.SUCCEEDED, done.error
    calls = fake.api_calls("/openai")
    assert [c.status for c in calls] == [429, 429, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert all(gap >= 0.4 for gap in gaps), gaps


@pytest.mark.parametrize(
    ("status", "code"), [(429, "provider_rate_limited"), (500, "provider_unavailable")]
)
async def test_a_provider_that_keeps_failing_fails_the_job_with_a_stable_code(
    stack: Stack, services: Services, fake: FakeProviders, status: int, code: str
) -> None:
    await services.provider_worker(configs(fake))
    await services.orchestrator()
    await until_available(stack, "dalle3")
    fake.fail_next(50, status, retry_after=0.2 if status == 429 else None)
    response = await stack.submit("dalle3", {"prompt": "a red kite"})
    done = await stack.wait(response.json()["id"], timeout_s=30)
    assert done.status is JobState.FAILED
    assert done.error is not None and done.error.code.value == code
    assert done.error.details["attempts"] == 3
    await asyncio.sleep(1.0)  # nothing more is sent once the job has failed
    calls = fake.api_calls("/openai/v1/images")
    assert len(calls) == 3 and done.attempts == 1, [c.status for c in calls]
    public = await stack.job(done.id)
    assert public["error"]["code"] == code


async def test_a_provider_asking_for_a_long_pause_fails_at_once(
    stack: Stack, services: Services, fake: FakeProviders
) -> None:
    await services.provider_worker(configs(fake, max_retry_after_s=5))
    await services.orchestrator()
    await until_available(stack, "dalle3")
    fake.fail_next(1, 429, retry_after=3600)
    response = await stack.submit("dalle3", {"prompt": "a red kite"})
    done = await stack.wait(response.json()["id"], timeout_s=30)
    assert done.error is not None and done.error.code.value == "provider_rate_limited"
    assert len(fake.api_calls("/openai/v1/images")) == 1


async def test_a_provider_backing_off_shows_unavailable_until_it_answers_again(
    stack: Stack, services: Services, fake: FakeProviders
) -> None:
    await services.provider_worker(configs(fake))
    await services.orchestrator()
    await until_available(stack, "dalle3")
    fake.fail_next(1, 429, retry_after=3)
    response = await stack.submit("dalle3", {"prompt": "a red kite"})

    async def openai_available() -> bool:
        status = (await stack.http.get("/v1/status", headers=stack.headers)).json()
        return bool(status["providers"]["openai"]["available"])

    await until(lambda: _not(openai_available()), timeout_s=10, every_s=0.1)
    model = (await stack.http.get("/v1/models/dalle3", headers=stack.headers)).json()
    assert model["availability"]["available"] is False
    done = await stack.wait(response.json()["id"], timeout_s=30)
    assert done.status is JobState.SUCCEEDED, done.error
    await until(openai_available, timeout_s=10, every_s=0.1)


async def _not(value: Awaitable[bool]) -> bool:
    return not await value
