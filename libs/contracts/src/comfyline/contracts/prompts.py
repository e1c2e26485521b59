"""Request/reply messages of the prompt-enhancer: ``enhance.v1`` and ``policy.v1``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .jobs import Enhancement
from .wire import Message, WireModel

Tier = Literal["general", "mature", "explicit"]
TIER_ORDER: tuple[Tier, ...] = ("general", "mature", "explicit")


class EnhanceRequest(Message):
    """Make ``prompt`` better for ``model`` and fit it in the model's token budget."""

    model: str
    prompt: str
    negative_prompt: str | None = None
    quality: Literal["fast", "high"] | None = None
    presets: list[str] = Field(default_factory=list)
    enhance: bool = Field(default=True, description="False: only normalise and fit the budget")
    use_llm: bool | None = Field(default=None, description="None: the model's default")
    job_id: str | None = None


class EnhanceReply(Message):
    """The enhanced prompt with what was done to it; ``error`` set when nothing could be done."""

    ok: bool = True
    enhancement: Enhancement | None = None
    error: str | None = None
    code: str | None = None


class PolicyRequest(Message):
    """Classify ``texts`` and check them against ``allowed``.

    Send only what will be generated (the composed prompt, and any other text the model renders):
    never negative prompts, which routinely name exactly what the user wants to avoid.
    """

    model: str
    texts: list[str]
    allowed: Tier = "general"
    job_id: str | None = None


class PolicyReply(Message):
    """The tier the texts fall in and whether the owner may run them."""

    tier: Tier
    allowed: bool
    reasons: list[str] = Field(default_factory=list)


class ErrorReply(WireModel):
    """What a request/reply service answers when the request itself is bad."""

    ok: Literal[False] = False
    error: str
    code: str
