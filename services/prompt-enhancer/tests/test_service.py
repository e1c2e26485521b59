"""The enhancer as a NATS service: the reply contract, errors, policy, time bounds, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from comfyline.contracts import (
    Enhancement,
    EnhanceReply,
    EnhanceRequest,
    ErrorReply,
    Names,
    PolicyReply,
    PolicyRequest,
    parse_strict,
)
from comfyline.enhancer import Enhancer, Settings, clip_tokenizer, prompt_tokens
from comfyline.runtime import Bus, BusError
from comfyline.testkit.enhancer import FakeChatServer, running, sample_catalogue

AskRaw = Callable[[str, bytes], Awaitable[dict[str, Any]]]
SettingsFor = Callable[..., Settings]
Ask = Callable[..., Coroutine[Any, Any, Enhancement]]
CLIP = clip_tokenizer()


async def test_a_reply_fills_every_field(ask_raw: AskRaw, names: Names, enhancer: Enhancer) -> None:
    request = EnhanceRequest(
        model="test-sdxl", prompt="a red  fox, snow,, a red fox", quality="fast", job_id="j1"
    )
    raw = await ask_raw(names.enhance(), request.to_bytes())
    reply = parse_strict(EnhanceReply, raw)  # the reply is exactly the contract
    enhancement = reply.enhancement
    assert reply.ok and enhancement is not None
    assert enhancement.original_prompt == "a red  fox, snow,, a red fox"
    assert enhancement.prompt == "a red fox, snow, masterpiece, best quality, highly detailed"
    assert enhancement.negative_prompt == "lowres, bad anatomy, blurry, watermark"
    assert (enhancement.strategy, enhancement.tokenizer, enhancement.budget) == (
        "rules",
        "clip",
        75,
    )
    assert enhancement.tokens_before == prompt_tokens(CLIP, request.prompt) == 9  # ",," is one
    after = enhancement.tokens_after
    assert after == prompt_tokens(CLIP, enhancement.prompt)
    assert enhancement.expansion_pct == round((after - 9) * 100 / 9, 1) > 0
    assert (enhancement.compressed, enhancement.dropped) == (False, [])
    assert (enhancement.llm_model, enhancement.fallback_reason) == (None, None)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{not json", "invalid_json"),
        (b'{"model": "test-sdxl"}', "validation_error"),
        (b'{"model": "nope", "prompt": "a fox"}', "unknown_model"),
        (b'{"model": "test-sdxl", "prompt": "   "}', "validation_error"),
        (b'{"model": "test-sdxl", "prompt": ",, ;"}', "validation_error"),
        (b'{"model": "test-sdxl", "prompt": "a fox", "presets": ["nope"]}', "validation_error"),
        (b'{"model": "test-sdxl", "prompt": "' + b"x" * 20_001 + b'"}', "validation_error"),
        (
            b'{"model": "test-sdxl", "use_llm": false, "prompt": "(' + b"fox " * 80 + b':1.2)"}',
            "validation_error",
        ),
    ],
)
async def test_bad_requests_get_an_error_with_a_stable_code(
    ask_raw: AskRaw, names: Names, enhancer: Enhancer, payload: bytes, code: str
) -> None:
    reply = parse_strict(ErrorReply, await ask_raw(names.enhance(), payload))
    assert reply.code == code and reply.error
    assert EnhanceReply.model_validate(reply.model_dump()).ok is False


async def test_policy_refuses_and_allows(
    bus: Bus, ask_raw: AskRaw, names: Names, enhancer: Enhancer
) -> None:
    async def check(texts: list[str], allowed: str) -> PolicyReply:
        request = PolicyRequest.model_validate(
            {"model": "test-sdxl", "texts": texts, "allowed": allowed, "job_id": "j1"}
        )
        return await bus.request(names.policy(), request, PolicyReply, timeout=5)

    refused = await check(["a fox", "nsfw"], "general")
    assert (refused.tier, refused.allowed) == ("explicit", False) and refused.reasons
    assert (await check(["nsfw"], "explicit")).allowed
    assert (await check(["a bloody battle"], "mature")).allowed
    allowed = await check(["a red fox"], "general")
    assert (allowed.tier, allowed.allowed) == ("general", True)
    bad = await ask_raw(names.policy(), b'{"model": "x", "texts": "a fox"}')
    assert parse_strict(ErrorReply, bad).code == "validation_error"
    assert enhancer.served["policy"] == 4


async def test_policy_rules_come_from_the_settings(
    bus: Bus, names: Names, settings_for: SettingsFor
) -> None:
    rules = [{"name": "no-cats", "tier": "mature", "terms": ["cat"]}]
    settings = settings_for(policy={"rules": rules})
    async with running(Enhancer(bus, sample_catalogue(), settings)):
        request = PolicyRequest(model="test-sdxl", texts=["two cats"], allowed="general")
        reply = await bus.request(names.policy(), request, PolicyReply, timeout=5)
    assert (reply.tier, reply.allowed, reply.reasons[0]) == ("mature", False, "no-cats: 'cats'")


async def test_a_request_past_its_bound_gets_a_timeout_code(
    bus: Bus, ask_raw: AskRaw, names: Names, settings_for: SettingsFor
) -> None:
    settings = settings_for(request_timeout_s=0.2)
    served = Enhancer(bus, sample_catalogue(), settings)

    async def stuck(request: EnhanceRequest) -> Enhancement:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")

    served.enhance = stuck  # type: ignore[method-assign]
    async with running(served):
        payload = EnhanceRequest(model="test-sdxl", prompt="a fox").to_bytes()
        reply = parse_strict(ErrorReply, await ask_raw(names.enhance(), payload))
    assert reply.code == "timeout"


async def test_stopping_lets_an_in_flight_request_finish(
    bus: Bus,
    ask: Ask,
    names: Names,
    settings_for: SettingsFor,
    llm_server: FakeChatServer,
) -> None:
    asked = asyncio.Event()
    llm_server.delay_s = 0.4

    def answer(body: dict[str, Any]) -> str:
        asked.set()
        return "a fox in the snow"

    llm_server.reply = answer
    settings = settings_for(llm_server)
    served = Enhancer(
        bus,
        sample_catalogue(),
        settings.model_copy(update={"llm": settings.llm.model_copy(update={"timeout_s": 2.0})}),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(served.run(stop))
    await asyncio.wait_for(served.ready.wait(), 5)
    pending = asyncio.create_task(ask(prompt="a fox", quality="high"))
    await asyncio.wait_for(asked.wait(), 5)
    stop.set()
    result = await asyncio.wait_for(pending, 5)
    await asyncio.wait_for(task, 5)
    assert result.strategy == "llm"
    with pytest.raises(BusError):  # nobody answers any more
        await bus.request(
            names.enhance(),
            EnhanceRequest(model="test-sdxl", prompt="x"),
            EnhanceReply,
            timeout=0.5,
        )
