"""Settings come from ENHANCER_ variables, nested with __, and refuse unsafe values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from comfyline.enhancer import Settings


def test_defaults_are_safe_without_an_environment() -> None:
    settings = Settings()
    assert settings.llm.configured is False
    assert settings.names.enhance() == "enhance.v1"
    assert {"photographic", "cinematic", "anime"} <= set(settings.presets)
    assert settings.policy.effective_rules()  # the built-in starting set
    assert settings.default_budget_tokens == 75


def test_nested_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rules = tmp_path / "policy.json"
    rules.write_text(json.dumps([{"name": "cats", "tier": "mature", "terms": ["cat"]}]))
    env = {
        "ENHANCER_NAMESPACE": "t1",
        "ENHANCER_NATS__URL": "nats://10.0.0.1:4222",
        "ENHANCER_LLM__ENABLED": "true",
        "ENHANCER_LLM__URL": "http://127.0.0.1:11434/v1",
        "ENHANCER_LLM__MODEL": "qwen2.5:3b",
        "ENHANCER_LLM__API_KEY": "sk-real",
        "ENHANCER_LLM__TIMEOUT_S": "2.5",
        "ENHANCER_LLM__SYSTEM_PROMPTS": json.dumps({"video": "You write video prompts."}),
        "ENHANCER_LLM__USE_FOR": '["high"]',
        "ENHANCER_POLICY__RULES_FILE": str(rules),
        "ENHANCER_POLICY__MAX_TIER": "mature",
        "ENHANCER_CACHE__SIZE": "10",
        "ENHANCER_CACHE__TTL_S": "60",
        "ENHANCER_BUDGET_OVERRIDES": '{"txt2vid-wan:high": 250}',
        "ENHANCER_PRESETS": '{"noir": {"tags": ["film noir", "black and white"]}}',
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.names.enhance() == "t1.enhance.v1"
    assert settings.nats.url == "nats://10.0.0.1:4222"
    assert settings.llm.configured and settings.llm.timeout_s == 2.5
    assert settings.llm.api_key is not None and settings.llm.api_key.get_secret_value() == "sk-real"
    assert "sk-real" not in repr(settings)
    assert settings.llm.system_prompts == {"video": "You write video prompts."}
    assert settings.llm.use_for == ["high"]
    assert [r.name for r in settings.policy.effective_rules()] == ["cats"]
    assert settings.policy.max_tier == "mature"
    assert (settings.cache.size, settings.cache.ttl_s) == (10, 60)
    assert settings.budget_overrides == {"txt2vid-wan:high": 250}
    assert list(settings.presets) == ["noir"]


def test_inline_rules_win_over_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENHANCER_POLICY__RULES_FILE", "/nonexistent.toml")
    monkeypatch.setenv("ENHANCER_POLICY__RULES", '[{"name": "x", "terms": ["x"]}]')
    assert [r.name for r in Settings().policy.effective_rules()] == ["x"]


def test_production_refuses_a_placeholder_llm_key() -> None:
    llm = {"enabled": True, "url": "http://h/v1", "model": "m", "api_key": "changeme"}
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(environment="production", llm=llm)
    Settings(environment="development", llm=llm)
    # The enhancer uses no S3, so the shared check for an S3 secret does not apply to it.
    Settings(environment="production")


def test_the_request_bound_must_outlast_the_llm_timeout() -> None:
    llm = {"enabled": True, "url": "http://h/v1", "model": "m", "timeout_s": 5}
    with pytest.raises(ValidationError, match="request_timeout_s"):
        Settings(llm=llm, request_timeout_s=4)
