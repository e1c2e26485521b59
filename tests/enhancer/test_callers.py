"""The gateway's preview and the orchestrator's per-job call reach the same enhancer service.

Neither caller is imported: each test sends exactly what that caller sends over NATS (the
contract), so they hold whatever the gateway and orchestrator are made of.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from comfyline.catalogue import Catalogue, compose_prompt
from comfyline.contracts import (
    EnhanceReply,
    EnhanceRequest,
    Names,
    PolicyReply,
    PolicyRequest,
    parse_strict,
)
from comfyline.enhancer import Enhancer, Settings, prompt_tokens, tokenizer_for
from comfyline.runtime import Bus, NatsSettings
from comfyline.testkit.enhancer import running, sample_catalogue

PROMPT = (
    "a lighthouse on black cliffs at dusk, crashing waves, (sea spray:1.2), long exposure, "
    "moody clouds, distant ship lights, wet rocks, volumetric fog, teal and amber palette, "
    "seabirds circling, lens flare, rain streaks, lonely keeper in the window, storm lantern, "
    "rust on the railing, kelp on the rocks, cinematic composition, tiny figure for scale"
)


@pytest.fixture
def settings(namespace: str, nats_settings: NatsSettings) -> Settings:
    return Settings(namespace=namespace, nats=nats_settings)


@pytest.fixture
async def service(bus: Bus, settings: Settings) -> AsyncIterator[Enhancer]:
    async with running(Enhancer(bus, sample_catalogue(), settings)) as enhancer:
        yield enhancer


async def test_gateway_preview_and_orchestrator_job_get_the_same_answer(
    bus: Bus, names: Names, service: Enhancer
) -> None:
    # The gateway: POST /v1/prompts/enhance forwards the client's JSON body as the request.
    body = {"model": "test-sdxl", "prompt": PROMPT, "quality": "high"}
    preview = await bus.nc.request(names.enhance(), json.dumps(body).encode(), timeout=5)
    from_gateway = parse_strict(EnhanceReply, preview.data)

    # The orchestrator: the template composes the prompt, the policy is checked, then enhanced.
    template = sample_catalogue().get("test-sdxl")
    prompt = compose_prompt(template, {"prompt": PROMPT})
    assert prompt is not None
    policy = await bus.request(
        names.policy(),
        PolicyRequest(model="test-sdxl", texts=[prompt], allowed="general", job_id="job_1"),
        PolicyReply,
        timeout=5,
    )
    assert policy.allowed
    request = EnhanceRequest(model="test-sdxl", prompt=prompt, quality="high", job_id="job_1")
    from_orchestrator = await bus.request(names.enhance(), request, EnhanceReply, timeout=5)

    assert from_gateway.ok and from_orchestrator.ok
    assert from_gateway.enhancement == from_orchestrator.enhancement
    enhancement = from_orchestrator.enhancement
    assert enhancement is not None and enhancement.tokens_after <= enhancement.budget == 75
    assert service.served == {"enhance": 2, "policy": 1, "cache_hit": 1}


async def test_two_instances_share_the_requests(
    names: Names, nats_settings: NatsSettings, settings: Settings, bus: Bus
) -> None:
    buses = [await Bus.connect(nats_settings, names, f"enhancer-{i}") for i in range(2)]
    try:
        instances = [Enhancer(b, sample_catalogue(), settings) for b in buses]
        async with running(instances[0]), running(instances[1]):
            replies = await asyncio.gather(
                *(
                    bus.request(
                        names.enhance(),
                        EnhanceRequest(model="test-sdxl", prompt=f"a fox number {n}"),
                        EnhanceReply,
                        timeout=5,
                    )
                    for n in range(40)
                )
            )
    finally:
        for b in buses:
            await b.close()
    assert all(r.ok for r in replies)
    counts = [i.served["enhance"] for i in instances]
    assert sum(counts) == 40 and min(counts) > 0, counts


@pytest.mark.parametrize("model", Catalogue.builtin().names())
async def test_every_builtin_model_fits_its_budget(
    bus: Bus, settings: Settings, model: str
) -> None:
    template = Catalogue.builtin().get(model)
    enhancer = Enhancer(bus, Catalogue.builtin(), settings)
    enhancement = await enhancer.enhance(
        EnhanceRequest(model=model, prompt=", ".join([PROMPT] * 4), quality="fast")
    )
    spec = template.prompt
    if spec is None:
        assert (enhancement.strategy, enhancement.fallback_reason) == (
            "normalise",
            "no_prompt_spec",
        )
        assert enhancement.budget == settings.default_budget_tokens
    else:
        assert (enhancement.tokenizer, enhancement.budget) == (spec.tokenizer, spec.budget_tokens)
    tokenizer = tokenizer_for(enhancement.tokenizer)  # type: ignore[arg-type]
    assert enhancement.tokens_after == prompt_tokens(tokenizer, enhancement.prompt)
    assert enhancement.tokens_after <= enhancement.budget
