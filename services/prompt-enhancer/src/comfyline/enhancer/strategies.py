"""Choosing what to do with one prompt: the strategy, its tags, budget, tokenizer and LLM use.

Three strategies, from least to most:

- ``normalise``: clean-up only (:mod:`.normalise`) and the budget. Used when the request says
  ``enhance=false``, the model's catalogue entry says ``enhance: false``, or the model has no
  prompt spec (then with ``default_budget_tokens``).
- ``rules``: normalise, then add what the catalogue and the chosen presets give: the style tags of
  each preset the user chose (``EnhanceRequest.presets``, defined in the enhancer's settings), the
  model's quality tags (``PromptSpec.quality_tags``), and for the negative prompt the presets'
  negative tags and the model's ``default_negative``.
- ``llm``: an OpenAI-compatible chat model rewrites the prompt first (system prompt per model or
  per kind), then the rules' tags are added as above. The LLM is used when the request asks for
  it (``use_llm=true``), or leaves it unset and its quality is in ``llm.use_for`` (by default
  ``high`` and unset: ``fast`` skips the LLM's latency). On timeout, error, an empty answer, an
  answer that lost the user's weight groups or embeddings, cannot fit, or is in a higher content
  tier than the user's prompt, the rules' result is used instead and ``fallback_reason`` says why.

The budget is the catalogue's (``PromptSpec.budget_by_quality`` for the request's quality, else
``PromptSpec.budget_tokens``), unless an operator overrides it for
``<model>:<quality>`` or ``<model>`` in ``budget_overrides``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from comfyline.contracts import ComfylineError, EnhanceRequest, ErrorCode, ModelTemplate

from .budget import Fit, fit
from .fragments import Fragment, Source
from .normalise import add_tags, normalise
from .settings import Settings
from .tokenizers import Tokenizer, TokenizerName, tokenizer_for

Strategy = Literal["normalise", "rules", "llm"]


class UnknownPreset(ComfylineError):
    """The request names a preset that neither the enhancer nor the model defines."""

    code = ErrorCode.VALIDATION_ERROR


class NoPromptSpec(ComfylineError):
    """The model reads no prompt (no prompt spec) and this deployment refuses to guess."""

    code = ErrorCode.VALIDATION_ERROR


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with one request's prompt."""

    strategy: Strategy
    budget: int
    tokenizer: Tokenizer
    tags: list[tuple[str, Source]]
    negative_tags: list[tuple[str, Source]]
    use_llm: bool
    system_prompt: str | None
    reason: str | None
    """Why the prompt is only normalised (``off``, ``no_prompt_spec``) or the LLM was skipped."""


class _Keep(dict[str, object]):
    """``str.format_map`` mapping that leaves unknown ``{placeholders}`` as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def system_prompt_for(template: ModelTemplate, settings: Settings, budget: int) -> str:
    """The LLM's instructions for ``template``: by model name, else by kind, else the default."""
    llm = settings.llm
    text = llm.system_prompts.get(template.name) or llm.system_prompts.get(template.kind)
    values = _Keep(
        model=template.name,
        title=template.title,
        kind=template.kind,
        budget=budget,
        words=max(1, int(budget * 0.7)),
    )
    return (text or llm.system_prompt).format_map(values)


def budget_for(template: ModelTemplate, quality: str | None, settings: Settings) -> int:
    """The model's token budget for this quality."""
    overrides = settings.budget_overrides
    if quality and f"{template.name}:{quality}" in overrides:
        return overrides[f"{template.name}:{quality}"]
    if template.name in overrides:
        return overrides[template.name]
    if template.prompt is not None:
        spec = template.prompt
        return spec.budget_by_quality.get(quality or "", spec.budget_tokens)
    return settings.default_budget_tokens


def _preset_tags(
    template: ModelTemplate, names: list[str], settings: Settings
) -> tuple[list[str], list[str]]:
    tags: list[str] = []
    negative: list[str] = []
    for name in names:
        preset = settings.presets.get(name)
        if preset is not None:
            tags.extend(preset.tags)
            negative.extend(preset.negative)
        elif name not in template.presets:  # a parameter preset of the model: nothing to add
            raise UnknownPreset(
                f"unknown preset {name!r}",
                details={"available": sorted({*settings.presets, *template.presets})},
            )
    return tags, negative


def plan(template: ModelTemplate, request: EnhanceRequest, settings: Settings) -> Plan:
    """Decide the strategy and gather what it needs, from the catalogue and the settings."""
    spec = template.prompt
    if spec is None and settings.unspecified_models == "refuse":
        raise NoPromptSpec(f"model {template.name!r} takes no prompt to enhance")
    name: TokenizerName = spec.tokenizer if spec is not None else "clip"
    tokenizer = tokenizer_for(name, settings.estimate_factor)
    budget = budget_for(template, request.quality, settings)
    if spec is None or not template.enhance or not request.enhance:
        off = "no_prompt_spec" if spec is None else "off"
        return Plan("normalise", budget, tokenizer, [], [], False, None, off)

    style, style_negative = _preset_tags(template, request.presets, settings)
    tags = [(t, Source.PRESET) for t in style] + [(t, Source.QUALITY) for t in spec.quality_tags]
    negative = [(t, Source.PRESET) for t in style_negative]
    if spec.default_negative:
        negative.append((spec.default_negative, Source.QUALITY))

    quality = request.quality or "unspecified"
    wanted = request.use_llm if request.use_llm is not None else quality in settings.llm.use_for
    reason: str | None = None
    if wanted and not settings.llm.configured:
        # Asked for explicitly: say why it did not happen. Left to the default: rules are normal.
        reason = "llm_unconfigured" if request.use_llm else None
        wanted = False
    system = system_prompt_for(template, settings, budget) if wanted else None
    strategy: Strategy = "llm" if wanted else "rules"
    return Plan(strategy, budget, tokenizer, tags, negative, wanted, system, reason)


def fit_prompts(chosen: Plan, fragments: list[Fragment], negative: str | None) -> tuple[Fit, Fit]:
    """The prompt and the negative prompt with the plan's tags added, each fitted to the budget."""
    for source in (Source.PRESET, Source.QUALITY):
        fragments = add_tags(fragments, [t for t, s in chosen.tags if s == source], source)
    negatives = normalise(negative or "", Source.USER)
    for source in (Source.PRESET, Source.QUALITY):
        tags = [t for t, s in chosen.negative_tags if s == source]
        negatives = add_tags(negatives, tags, source)
    empty = Fit([], "", 0, [])
    return (
        fit(fragments, chosen.budget, chosen.tokenizer),
        fit(negatives, chosen.budget, chosen.tokenizer) if negatives else empty,
    )
