"""What the enhancer makes of prompts: budgets, strategies, the LLM and its fallbacks, the cache."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from comfyline.contracts import Enhancement
from comfyline.enhancer import Enhancer, clip_tokenizer, prompt_tokens, tokenizer_for
from comfyline.testkit.enhancer import FakeChatServer

Ask = Callable[..., Coroutine[Any, Any, Enhancement]]
CLIP = clip_tokenizer()
LONG_SDXL = (
    "portrait of an old fisherman, (weathered face:1.3), deep wrinkles, grey beard, wool cap, "
    "stormy harbour behind him, rain on his coat, dramatic rim light, shallow depth of field, "
    "85mm lens, muted teal and orange palette, film grain, award winning photograph, "
    "ultra sharp eyes, reflections in puddles, seagulls in the distance, fishing boats, "
    "warm lantern glow"
)
LONG_WAN = " ".join(
    f"Shot {n}: the camera {move} past a {thing} while {weather} drifts across the frame."
    for n, (move, thing, weather) in enumerate(
        [
            ("glides slowly", "lighthouse on black cliffs", "sea mist"),
            ("tracks sideways", "crowded night market", "steam from food stalls"),
            ("pushes in", "sleeping red fox", "light snow"),
            ("cranes up", "cathedral of glass and steel", "golden dust"),
            ("orbits", "dancer in a flowing silk dress", "cherry blossom petals"),
            ("pulls back", "lonely train station", "heavy rain"),
            ("pans left", "field of sunflowers", "warm evening haze"),
            ("tilts down", "waterfall in a jungle", "spray and rainbows"),
        ]
    )
)


async def test_an_over_budget_prompt_comes_back_within_budget(ask: Ask, enhancer: Enhancer) -> None:
    assert prompt_tokens(CLIP, LONG_SDXL) > 75
    result = await ask(prompt=LONG_SDXL, quality="fast")
    assert result.tokens_after == prompt_tokens(CLIP, result.prompt) <= 75
    assert result.compressed
    assert result.dropped[:3] == ["highly detailed", "best quality", "masterpiece"]
    assert LONG_SDXL.startswith(result.prompt)  # the user's own words, kept first, in order
    assert "(weathered face:1.3)" in result.prompt
    assert result.dropped[-1] == "warm lantern glow"


async def test_weight_syntax_survives(ask: Ask, enhancer: Enhancer) -> None:
    prompt = "(red fox:1.3), ((snow)), [forest:city:0.5], \\(literal\\), embedding:good-style"
    result = await ask(prompt=prompt, enhance=False)
    assert result.prompt == prompt
    assert (result.strategy, result.fallback_reason) == ("normalise", "off")


async def test_the_llm_rewrites_and_the_rules_add_tags(
    ask: Ask, enhancer: Enhancer, llm_server: FakeChatServer
) -> None:
    result = await ask(prompt="a fox", quality="high")
    assert result.strategy == "llm" and result.llm_model == "fake-1"
    assert result.prompt == (
        "a red fox in deep snow, golden hour, soft rim light, masterpiece, best quality, "
        "highly detailed"
    )
    assert result.fallback_reason is None
    (call,) = llm_server.calls
    assert call.user == "a fox"
    assert "under 75 tokens" in call.system and "Test model test-sdxl" in call.system


@pytest.mark.parametrize(
    ("setup", "reason"),
    [({"delay_s": 3.0}, "llm_timeout"), ({"status": 500}, "llm_error")],
)
async def test_the_llm_falls_back_to_the_rules(
    ask: Ask,
    enhancer: Enhancer,
    llm_server: FakeChatServer,
    setup: dict[str, Any],
    reason: str,
) -> None:
    for key, value in setup.items():
        setattr(llm_server, key, value)
    started = time.monotonic()
    result = await ask(prompt="a fox", quality="high")
    assert time.monotonic() - started < 2.0  # the LLM's 0.5 s timeout, not its 3 s delay
    assert (result.strategy, result.fallback_reason, result.llm_model) == ("rules", reason, None)
    assert result.prompt == "a fox, masterpiece, best quality, highly detailed"
    await ask(prompt="a fox", quality="high")
    assert len(llm_server.calls) == 2  # a fallback is not cached: the next request tries again


async def test_a_rewrite_in_a_higher_tier_is_refused(
    ask: Ask, enhancer: Enhancer, llm_server: FakeChatServer
) -> None:
    llm_server.reply = "a fox, nsfw, nude"
    result = await ask(prompt="a fox", quality="high")
    assert (result.strategy, result.fallback_reason) == ("rules", "llm_policy")
    assert "nsfw" not in result.prompt


async def test_a_rewrite_must_keep_the_users_weight_syntax(
    ask: Ask, enhancer: Enhancer, llm_server: FakeChatServer
) -> None:
    llm_server.reply = "a red fox standing in deep snow, golden hour"
    lost = await ask(prompt="(red fox:1.3), snow", quality="high")
    assert (lost.strategy, lost.fallback_reason) == ("rules", "llm_syntax")
    assert lost.prompt.startswith("(red fox:1.3), snow")
    llm_server.reply = "(red fox:1.3) standing in deep snow, golden hour"
    kept = await ask(prompt="(red fox:1.3), deep snow", quality="high")
    assert (kept.strategy, kept.fallback_reason) == ("llm", None)
    assert kept.prompt.startswith("(red fox:1.3) standing in deep snow")


async def test_a_rewrite_that_cannot_fit_is_not_used(
    ask: Ask, enhancer: Enhancer, llm_server: FakeChatServer
) -> None:
    llm_server.reply = "(" + "glowing " * 80 + "fox:1.2)"
    result = await ask(prompt="a fox", quality="high")
    assert (result.strategy, result.fallback_reason) == ("rules", "llm_unfittable")
    assert result.prompt.startswith("a fox")


async def test_the_negative_prompt_is_fitted_too(ask: Ask, enhancer: Enhancer) -> None:
    negative = ", ".join(f"bad thing {n}" for n in range(30))
    result = await ask(prompt="a fox", negative_prompt=negative, quality="fast")
    assert result.negative_prompt is not None
    assert prompt_tokens(CLIP, result.negative_prompt) <= 75
    assert result.negative_prompt.startswith("bad thing 0, bad thing 1")
    assert result.compressed and result.tokens_after < 75
    assert result.dropped[:4] == [
        "negative: watermark",
        "negative: blurry",
        "negative: bad anatomy",
        "negative: lowres",
    ]


async def test_a_repeated_request_comes_from_the_cache(
    ask: Ask, enhancer: Enhancer, llm_server: FakeChatServer
) -> None:
    first = await ask(prompt="a fox", quality="high")
    second = await ask(prompt="a fox", quality="high")
    assert first == second
    assert len(llm_server.calls) == 1
    assert enhancer.served["cache_hit"] == 1
    await ask(prompt="a fox", quality="high", presets=["anime"])
    assert len(llm_server.calls) == 2


async def test_a_video_model_fits_its_estimated_budget(ask: Ask, enhancer: Enhancer) -> None:
    assert tokenizer_for("estimate").count(LONG_WAN) > 175
    result = await ask(model="test-wan", prompt=LONG_WAN, quality="fast")
    assert (result.tokenizer, result.budget) == ("estimate", 175)
    assert result.compressed and result.tokens_after <= 175
    assert LONG_WAN.startswith(result.prompt) and result.prompt.endswith(".")
    assert result.negative_prompt == "static, blurry, low quality"


async def test_a_model_without_a_prompt_spec_is_only_normalised(
    ask: Ask, enhancer: Enhancer
) -> None:
    result = await ask(model="test-noprompt", prompt=" a  fox ,, A Fox")
    assert (result.prompt, result.strategy, result.budget) == ("a fox", "normalise", 75)
    assert result.fallback_reason == "no_prompt_spec"
