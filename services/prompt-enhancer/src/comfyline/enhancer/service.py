"""The prompt-enhancer service: ``enhance.v1`` and ``policy.v1`` over NATS request/reply.

:class:`Enhancer` answers both subjects in the queue group ``enhancer``, so any number of
instances share the requests. The gateway (``POST /v1/prompts/enhance``, previews) and the
orchestrator (every job) send the same :class:`~comfyline.contracts.EnhanceRequest`; a bad request
is answered with an :class:`~comfyline.contracts.ErrorReply` carrying a stable code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

from opentelemetry import trace
from pydantic import ValidationError

from comfyline.catalogue import Catalogue
from comfyline.contracts import (
    TIER_ORDER,
    ComfylineError,
    Enhancement,
    EnhanceReply,
    EnhanceRequest,
    ErrorCode,
    ModelTemplate,
    PolicyReply,
    PolicyRequest,
    WireModel,
)
from comfyline.runtime import Bus, Delivery, job_id_var, model_var, serve
from comfyline.runtime.metrics import ENHANCE_DURATION, ENHANCE_FALLBACKS

from . import strategies
from .budget import Fit, Unfittable, prompt_tokens
from .cache import TtlCache
from .fragments import Fragment, Source, join, syntax_groups
from .llm import ChatClient, LlmUnavailable
from .normalise import clean, normalise
from .policy import ContentPolicy
from .settings import Settings

log = logging.getLogger(__name__)
M = TypeVar("M", bound=WireModel)
T = TypeVar("T")

#: Fallbacks worth retrying soon: their results are not cached.
_TRANSIENT = frozenset({"llm_timeout", "llm_error", "llm_unavailable"})


def parse_request(model: type[M], data: bytes) -> M:
    """The request in ``data``, or a ComfylineError saying what is wrong with it."""
    try:
        return model.from_bytes(data)
    except ValidationError as exc:
        errors = exc.errors()
        code = (
            ErrorCode.INVALID_JSON
            if any(e["type"] == "json_invalid" for e in errors)
            else ErrorCode.VALIDATION_ERROR
        )
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise ComfylineError(f"{where}: {first['msg']}", code=code) from exc


def expansion_pct(before: int, after: int) -> float:
    """How much longer (positive) or shorter (negative) the prompt got, in percent."""
    if before == 0:
        return 0.0 if after == 0 else 100.0
    return round((after - before) * 100.0 / before, 1)


class Enhancer:
    """Enhances prompts within their models' budgets and answers the content policy."""

    def __init__(
        self,
        bus: Bus,
        catalogue: Catalogue,
        settings: Settings,
        *,
        llm: ChatClient | None = None,
        policy: ContentPolicy | None = None,
    ) -> None:
        self.bus = bus
        self.catalogue = catalogue
        self.settings = settings
        self.llm = llm or ChatClient(settings.llm)
        self.policy = policy or ContentPolicy(
            settings.policy.effective_rules(), settings.policy.max_tier
        )
        self.cache: TtlCache[Enhancement] = TtlCache(settings.cache.size, settings.cache.ttl_s)
        self.served: Counter[str] = Counter()
        self.ready = asyncio.Event()
        self._in_flight: set[asyncio.Task[object]] = set()

    # --- the service ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve both subjects until ``stop`` is set, then let in-flight requests finish."""
        names = self.bus.names
        queue = names.queue_group("enhancer")
        subscriptions = [
            await serve(self.bus, names.enhance(), queue, self._on_enhance),
            await serve(self.bus, names.policy(), queue, self._on_policy),
        ]
        await self.bus.nc.flush(timeout=int(max(1, self.bus.settings.request_timeout_s)))
        self.ready.set()
        log.info("serving", extra={"subjects": [names.enhance(), names.policy()]})
        try:
            await stop.wait()
        finally:
            for subscription in subscriptions:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
            await asyncio.sleep(0)  # requests already received start, and so are waited for
            if self._in_flight:
                await asyncio.wait(set(self._in_flight), timeout=self.settings.shutdown_grace_s)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.llm.aclose(), timeout=5)
            self.ready.clear()

    async def _tracked(self, work: Awaitable[T]) -> T:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                return await work
        except TimeoutError as exc:
            raise ComfylineError("the enhancer ran out of time", code=ErrorCode.TIMEOUT) from exc
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _on_enhance(self, delivery: Delivery) -> EnhanceReply:
        """Answer one ``enhance.v1`` request."""
        request = parse_request(EnhanceRequest, delivery.data)
        self.served["enhance"] += 1
        job_id_var.set(request.job_id)
        model_var.set(request.model)
        enhancement = await self._tracked(self.enhance(request))
        trace.get_current_span().set_attributes(
            {
                "comfyline.enhancer.strategy": enhancement.strategy,
                "comfyline.enhancer.tokens_before": enhancement.tokens_before,
                "comfyline.enhancer.tokens_after": enhancement.tokens_after,
                "comfyline.enhancer.compressed": enhancement.compressed,
            }
        )
        return EnhanceReply(enhancement=enhancement)

    async def _on_policy(self, delivery: Delivery) -> PolicyReply:
        """Answer one ``policy.v1`` request."""
        request = parse_request(PolicyRequest, delivery.data)
        self.served["policy"] += 1
        job_id_var.set(request.job_id)
        model_var.set(request.model)
        reply = await self._tracked(self.check_policy(request))
        if not reply.allowed:
            log.info("content policy refused a job", extra={"tier": reply.tier})
        return reply

    # --- the core, callable in-process -----------------------------------------------------------
    async def check_policy(self, request: PolicyRequest) -> PolicyReply:
        """The tier of ``request.texts``, and whether an owner allowed ``allowed`` may run them."""
        size = sum(len(t) for t in request.texts)
        if size > 4 * self.settings.max_prompt_chars:
            raise ComfylineError("texts are too long", code=ErrorCode.VALIDATION_ERROR)
        return await self._cpu(size, self.policy.check, request.texts, request.allowed)

    async def enhance(self, request: EnhanceRequest) -> Enhancement:
        """The enhanced prompt for ``request``, from the cache when it was made recently."""
        template = self.catalogue.get(request.model)
        size = len(request.prompt) + len(request.negative_prompt or "")
        limit = self.settings.max_prompt_chars
        if max(len(request.prompt), len(request.negative_prompt or "")) > limit:
            raise ComfylineError(
                f"prompt or negative prompt is longer than {limit} characters",
                code=ErrorCode.VALIDATION_ERROR,
            )
        if not request.prompt.strip():
            raise ComfylineError("prompt is empty", code=ErrorCode.VALIDATION_ERROR)
        started = time.monotonic()
        plan = strategies.plan(template, request, self.settings)
        key: Hashable = (
            template.name,
            template.version,
            request.prompt,
            request.negative_prompt,
            request.quality,
            tuple(request.presets),
            request.enhance,
            request.use_llm,
        )
        enhancement, hit = await self.cache.get_or_compute(
            key, lambda: self._compute(template, request, plan, size)
        )
        if hit:
            self.served["cache_hit"] += 1
        strategy = "cache" if hit else enhancement.strategy
        ENHANCE_DURATION.labels(strategy).observe(time.monotonic() - started)
        return enhancement

    async def _compute(
        self, template: ModelTemplate, request: EnhanceRequest, plan: strategies.Plan, size: int
    ) -> tuple[Enhancement, bool]:
        tokenizer = plan.tokenizer
        tokens_before = await self._cpu(size, prompt_tokens, tokenizer, clean(request.prompt))
        base = await self._cpu(size, normalise, request.prompt, Source.USER)
        if not base:
            raise ComfylineError("prompt has no words", code=ErrorCode.VALIDATION_ERROR)
        strategy, reason, llm_model = plan.strategy, plan.reason, None
        fits: tuple[Fit, Fit] | None = None
        if plan.use_llm and plan.system_prompt is not None:
            try:
                rewritten = await self._rewrite(plan.system_prompt, request.prompt, base)
                fits = await self._cpu(
                    size, strategies.fit_prompts, plan, rewritten, request.negative_prompt
                )
                llm_model = self.settings.llm.model
            except (LlmUnavailable, Unfittable) as exc:
                failure = exc.reason if isinstance(exc, LlmUnavailable) else "llm_unfittable"
                log.warning("LLM rewrite not used; using the rules", extra={"reason": failure})
                strategy, reason = "rules", failure
                ENHANCE_FALLBACKS.labels(failure).inc()
        if fits is None:
            fits = await self._cpu(
                size, strategies.fit_prompts, plan, base, request.negative_prompt
            )
        prompt_fit, negative_fit = fits
        dropped = prompt_fit.dropped + [f"negative: {d}" for d in negative_fit.dropped]
        enhancement = Enhancement(
            original_prompt=request.prompt,
            prompt=prompt_fit.text,
            negative_prompt=negative_fit.text or None,
            strategy=strategy,
            tokenizer=tokenizer.name,
            tokens_before=tokens_before,
            tokens_after=prompt_fit.tokens,
            budget=plan.budget,
            expansion_pct=expansion_pct(tokens_before, prompt_fit.tokens),
            compressed=prompt_fit.compressed or negative_fit.compressed,
            dropped=dropped,
            llm_model=llm_model,
            fallback_reason=reason,
        )
        return enhancement, reason not in _TRANSIENT

    async def _rewrite(self, system: str, prompt: str, base: list[Fragment]) -> list[Fragment]:
        """The LLM's rewrite as fragments.

        Refused when it lost any of the user's weight groups or embeddings, or when it is in a
        higher content tier than the user's prompt.
        """
        text = await self.llm.rewrite(system, join(base))
        written = " ".join(text.split())
        lost = [g for g in syntax_groups(join(base)) if g not in written]
        if lost:
            raise LlmUnavailable("llm_syntax", f"the rewrite lost {lost[0]!r}")
        before = self.policy.classify([prompt])
        after = self.policy.classify([text])
        if TIER_ORDER.index(after.tier) > TIER_ORDER.index(before.tier) or (
            after.blocked and not before.blocked
        ):
            raise LlmUnavailable("llm_policy", "the rewrite is in a higher content tier")
        rewritten = normalise(text, Source.LLM)
        if not rewritten:
            raise LlmUnavailable("llm_empty", "the LLM answered with no prompt")
        return rewritten

    async def _cpu(self, size: int, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` inline for small inputs (microseconds), in a thread for large ones."""
        if size <= self.settings.inline_chars:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)
