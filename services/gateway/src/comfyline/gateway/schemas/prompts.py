"""Prompt enhancement previews, as the API takes and shows them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from comfyline.contracts import Enhancement

from .jobs import Incoming


class EnhanceCreate(Incoming):
    """A prompt to enhance for a model (a preview: no job is made)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model": "cpu-smoke", "prompt": "a red fox"}]},
    )

    model: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    prompt: str = Field(min_length=1, max_length=2000)
    negative_prompt: str | None = Field(default=None, max_length=2000)
    quality: Literal["fast", "high"] | None = None
    presets: list[str] = Field(default_factory=list, max_length=8)
    enhance: bool = True
    use_llm: bool | None = None


class EnhancePublic(BaseModel):
    """What the enhancer made of the prompt."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "enhancement": {
                        "original_prompt": "a red fox",
                        "prompt": "a red fox, highly detailed",
                        "strategy": "rules",
                        "tokenizer": "clip",
                        "tokens_before": 3,
                        "tokens_after": 6,
                        "budget": 75,
                        "expansion_pct": 100.0,
                        "compressed": False,
                    }
                }
            ]
        }
    )

    enhancement: Enhancement
