"""Content policy and prompt enhancement, asked of the prompt-enhancer over request/reply.

Order (the design's): the template composes the prompt (``compose_prompt``), ``policy.v1`` checks
every text of the job, always, failing closed (tried ``policy_attempts`` times, then the job
fails with ``policy_unavailable``), and only then ``enhance.v1`` fits the prompt to the model's
budget, within ``enhance_timeout_s``; on a timeout or an error the original prompt is kept and
the reason is recorded in ``Enhancement.fallback_reason``. A model (``ModelTemplate.enhance``) or
a job (``enhance: false``) can switch enhancement off; then the enhancer is not asked at all.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import Field, ValidationError

from comfyline.catalogue import TemplateError, Texts, job_texts
from comfyline.contracts import (
    ComfylineError,
    Enhancement,
    EnhanceReply,
    EnhanceRequest,
    ErrorCode,
    JobRecord,
    ModelTemplate,
    PolicyRequest,
    Tier,
    WireModel,
)
from comfyline.runtime import Bus, BusError

from .settings import Settings

log = logging.getLogger(__name__)


class PolicyRefused(ComfylineError):
    """The texts fall in a tier the owner may not use."""

    code = ErrorCode.CONTENT_POLICY


class PolicyUnavailable(ComfylineError):
    """The policy service did not answer usably, after every try (the job fails closed)."""

    code = ErrorCode.POLICY_UNAVAILABLE


class PolicyAnswer(WireModel):
    """A ``PolicyReply`` or an ``ErrorReply``: whichever came back, read defensively."""

    tier: Tier | None = None
    allowed: bool | None = None
    reasons: list[str] = Field(default_factory=list)
    ok: bool = True
    error: str | None = None
    code: str | None = None


def kept(template: ModelTemplate, texts: Texts, reason: str) -> Enhancement:
    """An :class:`Enhancement` that keeps the original prompt, saying why."""
    spec = template.prompt
    prompt = texts.prompt or ""
    return Enhancement(
        original_prompt=prompt,
        prompt=prompt,
        negative_prompt=texts.negative,
        strategy="none",
        tokenizer=spec.tokenizer if spec else "estimate",
        tokens_before=0,
        tokens_after=0,
        budget=spec.budget_tokens if spec else 0,
        expansion_pct=0.0,
        compressed=False,
        fallback_reason=reason,
    )


class PromptGate:
    """Asks ``policy.v1`` and ``enhance.v1`` for one job."""

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings

    async def check_policy(self, record: JobRecord, template: ModelTemplate) -> None:
        """Pass, or raise :class:`PolicyRefused` / :class:`PolicyUnavailable`."""
        try:
            texts = job_texts(template, record.input).all()
        except TemplateError as exc:
            raise ComfylineError(exc.message, code=ErrorCode.TEMPLATE_ERROR) from exc
        if not texts:
            return
        request = PolicyRequest(
            model=record.model, texts=texts, allowed=record.content_tier, job_id=record.id
        )
        pause = self.settings.policy_backoff_s
        problem = "no answer"
        for attempt in range(1, self.settings.policy_attempts + 1):
            try:
                answer = await self.bus.request(
                    self.bus.names.policy(),
                    request,
                    PolicyAnswer,
                    timeout=self.settings.policy_timeout_s,
                )
            except (BusError, ValidationError) as exc:
                problem = str(exc)
            else:
                if answer.ok and answer.allowed is not None:
                    if not answer.allowed:
                        raise PolicyRefused(
                            f"the prompt falls in the {answer.tier or 'a restricted'} tier, "
                            f"beyond the allowed {record.content_tier}",
                            details={"tier": answer.tier, "reasons": answer.reasons},
                        )
                    return
                problem = f"{answer.code or 'error'}: {answer.error or 'unusable reply'}"
            log.warning("policy check failed", extra={"attempt": attempt, "problem": problem})
            if attempt < self.settings.policy_attempts:
                await asyncio.sleep(pause)
                pause *= 2
        raise PolicyUnavailable(f"the content policy could not be checked ({problem})")

    async def enhance(
        self, record: JobRecord, template: ModelTemplate
    ) -> tuple[Enhancement, bool] | None:
        """The enhancement to record, and whether the enhancer was asked; None without a prompt."""
        texts = job_texts(template, record.input)
        if template.prompt is None or not texts.prompt:
            return None
        if not (template.enhance and record.enhance):
            return kept(template, texts, "off"), False
        # Templates name the fast/high choice `preset` (SDXL, WAN) or `quality`.
        quality = record.input.get("quality") or record.input.get("preset")
        request = EnhanceRequest(
            model=record.model,
            prompt=texts.prompt,
            negative_prompt=texts.negative,
            quality=quality if quality in ("fast", "high") else None,
            job_id=record.id,
        )
        try:
            reply = await self.bus.request(
                self.bus.names.enhance(),
                request,
                EnhanceReply,
                timeout=self.settings.enhance_timeout_s,
            )
        except BusError as exc:
            reason = "timeout" if exc.code is ErrorCode.TIMEOUT else f"unavailable: {exc.message}"
            return kept(template, texts, reason), True
        except ValidationError:
            return kept(template, texts, "error: unreadable reply"), True
        if not reply.ok or reply.enhancement is None:
            return kept(template, texts, f"error: {reply.code or 'error'}: {reply.error}"), True
        return reply.enhancement, True
