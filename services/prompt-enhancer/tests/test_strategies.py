"""Strategy choice per model, quality and request; tags and budgets from the catalogue."""

from __future__ import annotations

from typing import Any

import pytest

from comfyline.contracts import EnhanceRequest, ErrorCode
from comfyline.enhancer import Settings, Source, UnknownPreset, plan
from comfyline.enhancer.settings import LlmSettings
from comfyline.enhancer.strategies import NoPromptSpec, system_prompt_for
from comfyline.testkit.enhancer import sample_catalogue

CATALOGUE = sample_catalogue()
SDXL = CATALOGUE.get("test-sdxl")
WAN = CATALOGUE.get("test-wan")
LLM = LlmSettings(enabled=True, url="http://127.0.0.1:9/v1", model="m")


def request(model: str = "test-sdxl", **fields: Any) -> EnhanceRequest:
    return EnhanceRequest.model_validate({"model": model, "prompt": "a fox", **fields})


def test_rules_take_tags_and_negatives_from_the_catalogue() -> None:
    chosen = plan(SDXL, request(), Settings())
    assert (chosen.strategy, chosen.budget, chosen.tokenizer.name) == ("rules", 75, "clip")
    assert chosen.tags == [
        ("masterpiece", Source.QUALITY),
        ("best quality", Source.QUALITY),
        ("highly detailed", Source.QUALITY),
    ]
    assert chosen.negative_tags == [("lowres, bad anatomy, blurry, watermark", Source.QUALITY)]
    assert (chosen.use_llm, chosen.reason) == (False, None)


def test_a_video_model_uses_its_own_budget_and_the_estimate() -> None:
    chosen = plan(WAN, request("test-wan"), Settings())
    assert (chosen.budget, chosen.tokenizer.name) == (175, "estimate")


def test_presets_add_style_tags_before_quality_tags() -> None:
    chosen = plan(SDXL, request(presets=["cinematic", "fast"]), Settings())
    assert chosen.tags[0] == ("cinematic film still", Source.PRESET)
    assert chosen.tags[-1] == ("highly detailed", Source.QUALITY)
    assert ("cartoon", Source.PRESET) in chosen.negative_tags  # "fast" is a parameter preset


def test_an_unknown_preset_is_a_validation_error() -> None:
    with pytest.raises(UnknownPreset) as refused:
        plan(SDXL, request(presets=["nope"]), Settings())
    assert refused.value.code == ErrorCode.VALIDATION_ERROR
    assert "cinematic" in refused.value.details["available"]


@pytest.mark.parametrize(
    ("model", "fields", "reason"),
    [
        ("test-sdxl", {"enhance": False}, "off"),
        ("test-plain", {}, "off"),
        ("test-noprompt", {}, "no_prompt_spec"),
    ],
)
def test_normalise_only(model: str, fields: dict[str, Any], reason: str) -> None:
    chosen = plan(CATALOGUE.get(model), request(model, **fields), Settings(llm=LLM))
    assert (chosen.strategy, chosen.tags, chosen.use_llm, chosen.reason) == (
        "normalise",
        [],
        False,
        reason,
    )
    assert chosen.budget == 75


def test_a_model_without_a_prompt_spec_can_be_refused() -> None:
    settings = Settings(unspecified_models="refuse", default_budget_tokens=50)
    with pytest.raises(NoPromptSpec):
        plan(CATALOGUE.get("test-noprompt"), request("test-noprompt"), settings)
    chosen = plan(
        CATALOGUE.get("test-noprompt"), request("test-noprompt"), Settings(default_budget_tokens=50)
    )
    assert chosen.budget == 50


@pytest.mark.parametrize(
    ("fields", "use_llm"),
    [
        ({}, True),
        ({"quality": "high"}, True),
        ({"quality": "fast"}, False),
        ({"quality": "fast", "use_llm": True}, True),
        ({"quality": "high", "use_llm": False}, False),
    ],
)
def test_llm_use_by_quality_and_request(fields: dict[str, Any], use_llm: bool) -> None:
    chosen = plan(SDXL, request(**fields), Settings(llm=LLM))
    assert chosen.use_llm is use_llm
    assert chosen.strategy == ("llm" if use_llm else "rules")
    assert (chosen.system_prompt is not None) is use_llm


def test_asking_for_an_unconfigured_llm_says_so() -> None:
    assert plan(SDXL, request(use_llm=True), Settings()).reason == "llm_unconfigured"
    assert plan(SDXL, request(), Settings()).reason is None


def test_system_prompts_by_model_then_kind_then_default() -> None:
    by_kind = LLM.model_copy(update={"system_prompts": {"video": "Video, {budget} tokens."}})
    assert system_prompt_for(WAN, Settings(llm=by_kind), 175) == "Video, 175 tokens."
    by_name = by_kind.model_copy(
        update={"system_prompts": {"test-wan": "{title} {x}", "video": "no"}}
    )
    assert system_prompt_for(WAN, Settings(llm=by_name), 175) == "Test model test-wan {x}"
    default = system_prompt_for(SDXL, Settings(llm=LLM), 75)
    assert "under 75 tokens" in default and "(word:1.2)" in default


def test_budget_overrides_per_model_and_quality() -> None:
    settings = Settings(budget_overrides={"test-wan:high": 250, "test-sdxl": 60})
    assert plan(WAN, request("test-wan", quality="high"), settings).budget == 250
    assert plan(WAN, request("test-wan", quality="fast"), settings).budget == 175
    assert plan(SDXL, request(quality="high"), settings).budget == 60


def test_a_quality_budget_from_the_catalogue_applies_to_that_quality() -> None:
    from comfyline.catalogue import Catalogue
    from comfyline.enhancer.settings import Settings as EnhancerSettings
    from comfyline.enhancer.strategies import budget_for

    wan = Catalogue.builtin().get("txt2vid-wan")
    settings = EnhancerSettings()
    assert wan.prompt is not None
    assert budget_for(wan, "fast", settings) == 175
    assert budget_for(wan, "high", settings) == 250
    assert budget_for(wan, None, settings) == wan.prompt.budget_tokens == 175
