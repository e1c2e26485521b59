"""The enhancer's settings: ``ENHANCER_`` variables, nested blocks read with ``__``.

Built once in ``main()`` and passed down. Examples::

    ENHANCER_NATS__URL=nats://127.0.0.1:4222
    ENHANCER_LLM__ENABLED=true
    ENHANCER_LLM__URL=http://127.0.0.1:11434/v1
    ENHANCER_LLM__MODEL=qwen2.5:3b-instruct
    ENHANCER_LLM__SYSTEM_PROMPTS='{"txt2vid-wan": "You write prompts for a video model ..."}'
    ENHANCER_POLICY__RULES_FILE=/etc/comfyline/policy.toml
    ENHANCER_CACHE__TTL_S=600
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from comfyline.contracts import Tier
from comfyline.runtime import ServiceSettings
from comfyline.runtime.settings import check_secret

from .policy import DEFAULT_RULES, PolicyRule, load_rules

QualityKey = Literal["fast", "high", "unspecified"]

DEFAULT_SYSTEM_PROMPT = (
    "You improve prompts for {title}, a {kind} generation model. Rewrite the user's prompt into "
    "one better prompt for this model. Keep the user's subject and words first and in their "
    "order, then add concrete visual detail: composition, lighting, materials, style. Keep any "
    "weight syntax such as (word:1.2), [..] and embedding:name exactly as written. Write "
    "comma-separated phrases, under {budget} tokens (about {words} words). Add nothing sexual, "
    "violent or otherwise sensitive that the user did not ask for. Answer with the prompt only."
)


class LlmSettings(BaseModel):
    """The optional LLM rewrite through an OpenAI-compatible chat endpoint."""

    enabled: bool = False
    url: str | None = Field(default=None, description="base URL, e.g. http://127.0.0.1:11434/v1")
    model: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=3.0, gt=0, description="the whole call, connect included")
    connect_timeout_s: float = Field(default=1.0, gt=0)
    temperature: float = Field(default=0.3, ge=0, le=2)
    max_tokens: int = Field(default=400, ge=16)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    system_prompts: dict[str, str] = Field(
        default_factory=dict, description="by model name, or by kind (image, video, ...)"
    )
    use_for: list[QualityKey] = Field(
        default=["high", "unspecified"],
        description="qualities that use the LLM when a request leaves use_llm unset",
    )
    failure_threshold: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=30.0, ge=0)

    @property
    def configured(self) -> bool:
        """Enabled, with an endpoint and a model."""
        return self.enabled and bool(self.url) and bool(self.model)


class PolicySettings(BaseModel):
    """Content-policy rules: a file (JSON or TOML), or inline; the built-in set otherwise."""

    rules_file: Path | None = None
    rules: list[PolicyRule] | None = Field(default=None, description="inline; wins over the file")
    max_tier: Tier = Field(default="explicit", description="cap for every owner of this deployment")

    def effective_rules(self) -> list[PolicyRule]:
        """The inline rules, else the file's, else the built-in starting set."""
        if self.rules is not None:
            return list(self.rules)
        if self.rules_file is not None:
            return load_rules(self.rules_file)
        return list(DEFAULT_RULES)


class CacheSettings(BaseModel):
    """The cache of recent enhancements (per process)."""

    size: int = Field(default=1024, ge=0, description="entries; 0 turns the cache off")
    ttl_s: float = Field(default=600.0, gt=0)


class StylePreset(BaseModel):
    """Style tags a user can choose by name (``EnhanceRequest.presets``)."""

    tags: list[str]
    negative: list[str] = Field(default_factory=list)
    description: str = ""


def default_presets() -> dict[str, StylePreset]:
    """The style presets a deployment gets unless it sets ``ENHANCER_PRESETS``."""
    return {
        "photographic": StylePreset(
            tags=["photograph", "natural lighting", "sharp focus", "high detail"],
            negative=["drawing", "painting", "illustration", "cartoon"],
            description="a realistic photograph",
        ),
        "cinematic": StylePreset(
            tags=["cinematic film still", "dramatic lighting", "shallow depth of field"],
            negative=["cartoon", "illustration"],
            description="a still from a film",
        ),
        "anime": StylePreset(
            tags=["anime style", "vibrant colors", "clean line art"],
            negative=["photograph", "realistic"],
            description="anime artwork",
        ),
        "digital-art": StylePreset(
            tags=["digital art", "concept art", "intricate detail"],
            negative=["photograph"],
            description="digital painting",
        ),
        "3d-render": StylePreset(
            tags=["3d render", "octane render", "global illumination"],
            negative=["sketch", "flat"],
            description="a 3D render",
        ),
    }


class Settings(ServiceSettings):
    """Everything the prompt-enhancer reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="ENHANCER_", env_nested_delimiter="__", extra="ignore"
    )

    llm: LlmSettings = Field(default_factory=LlmSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    presets: dict[str, StylePreset] = Field(default_factory=default_presets)
    default_budget_tokens: int = Field(
        default=75, gt=0, description="budget for a model without a prompt spec"
    )
    unspecified_models: Literal["normalise", "refuse"] = Field(
        default="normalise", description="what to do for a model without a prompt spec"
    )
    budget_overrides: dict[str, int] = Field(
        default_factory=dict, description='"<model>" or "<model>:<quality>" -> tokens'
    )
    estimate_factor: float = Field(default=1.25, ge=1.0)
    max_prompt_chars: int = Field(default=20_000, gt=0)
    inline_chars: int = Field(
        default=2_000, gt=0, description="longer prompts are tokenized in a worker thread"
    )
    request_timeout_s: float = Field(
        default=4.0, gt=0, description="bound on one request; keep below the callers' timeout"
    )

    uses_object_store: ClassVar[bool] = False

    @model_validator(mode="after")
    def _check_llm(self) -> Settings:
        key = self.llm.api_key.get_secret_value() if self.llm.api_key else None
        check_secret(self.environment, "llm.api_key", key)
        if self.llm.configured and self.request_timeout_s <= self.llm.timeout_s:
            raise ValueError("request_timeout_s must be longer than llm.timeout_s")
        return self
