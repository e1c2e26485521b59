"""Content policy: which tier a prompt falls in, and whether its owner may run it.

Tiers are ordered ``general < mature < explicit`` (``comfyline.contracts.TIER_ORDER``). Each
:class:`PolicyRule` names a tier and the terms that put a text in it; a text's tier is the highest
tier of any rule that matches, and a rule with ``block = true`` refuses the job whatever the
owner's tier (for content no owner may generate). An owner may run a job when its tier is at most
the owner's allowed tier (from its API key or token, sent by the orchestrator as
``PolicyRequest.allowed``), capped by the deployment's ``max_tier``.

Matching is by whole words and phrases, any case, on the text as the model reads it (weight
markup removed, Unicode compatibility-folded, ``_`` read as a space, as in booru tags). A term
ending in ``*`` matches any word starting with it; other terms also match their plural in ``s``
or ``es``. This is a keyword classifier: predictable and fast, and no better than its rules.

Rules come from ``ENHANCER_POLICY__RULES`` (inline JSON), else ``ENHANCER_POLICY__RULES_FILE``
(JSON or TOML), else :data:`DEFAULT_RULES`, a small starting set.
"""

from __future__ import annotations

import json
import re
import tomllib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field, TypeAdapter, model_validator

from comfyline.contracts import TIER_ORDER, PolicyReply, Tier

from .fragments import plain_text


class PolicyRule(BaseModel):
    """Terms that put a text in a tier (or refuse it outright, with ``block``)."""

    name: str
    tier: Tier = "mature"
    terms: list[str] = Field(default_factory=list, description="whole words or phrases; a* prefix")
    patterns: list[str] = Field(default_factory=list, description="regular expressions")
    requires: list[str] = Field(
        default_factory=list, description="terms of which one must also appear for the rule to hold"
    )
    block: bool = Field(default=False, description="refuse whatever the owner's tier")

    @model_validator(mode="after")
    def _has_terms(self) -> PolicyRule:
        if not self.terms and not self.patterns:
            raise ValueError(f"policy rule {self.name!r} has no terms or patterns")
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                message = f"policy rule {self.name!r}: bad pattern {pattern!r}: {exc}"
                raise ValueError(message) from exc
        return self


def _term_regex(terms: Iterable[str]) -> re.Pattern[str] | None:
    parts = []
    for term in terms:
        words = term.strip().casefold()
        if not words:
            continue
        prefix = words.endswith("*")
        body = r"\s+".join(re.escape(w) for w in words.rstrip("*").split())
        parts.append(body + (r"\w*" if prefix else r"(?:e?s)?"))
    if not parts:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)")


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: PolicyRule
    match: list[re.Pattern[str]]
    requires: re.Pattern[str] | None

    def find(self, text: str) -> str | None:
        for pattern in self.match:
            found = pattern.search(text)
            if found:
                if self.requires is not None and not self.requires.search(text):
                    return None
                return found.group(0)
        return None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The tier of some texts, whether a blocking rule matched, and which rules did."""

    tier: Tier
    blocked: bool = False
    reasons: list[str] = field(default_factory=list)


def _rank(tier: Tier) -> int:
    return TIER_ORDER.index(tier)


def policy_text(text: str) -> str:
    """``text`` as the rules see it: what the model reads, folded, ``_`` as a space."""
    folded = unicodedata.normalize("NFKC", text).casefold().replace("_", " ")
    return " ".join(plain_text(folded).split())


class ContentPolicy:
    """Classifies texts with a set of rules and checks them against an owner's tier."""

    def __init__(self, rules: Iterable[PolicyRule], max_tier: Tier = "explicit") -> None:
        self.rules = list(rules)
        self.max_tier: Tier = max_tier
        self._compiled: list[_Compiled] = []
        for rule in self.rules:
            patterns = [re.compile(p, re.I) for p in rule.patterns]
            terms = _term_regex(rule.terms)
            matchers = [*([terms] if terms else []), *patterns]
            self._compiled.append(_Compiled(rule, matchers, _term_regex(rule.requires)))

    def classify(self, texts: Iterable[str]) -> Verdict:
        """The highest tier any rule gives ``texts``, and every rule that matched."""
        joined = "\n".join(policy_text(t) for t in texts)
        tier: Tier = "general"
        blocked = False
        reasons: list[str] = []
        for compiled in self._compiled:
            found = compiled.find(joined)
            if found is None:
                continue
            rule = compiled.rule
            reasons.append(f"{rule.name}: {found!r}")
            blocked = blocked or rule.block
            if _rank(rule.tier) > _rank(tier):
                tier = rule.tier
        return Verdict(tier, blocked, reasons)

    def check(self, texts: Iterable[str], allowed: Tier) -> PolicyReply:
        """Whether an owner allowed up to ``allowed`` may run ``texts``."""
        verdict = self.classify(texts)
        limit: Tier = allowed if _rank(allowed) <= _rank(self.max_tier) else self.max_tier
        reasons = list(verdict.reasons)
        if verdict.blocked:
            reasons.append("refused: content that no owner may generate")
        elif _rank(verdict.tier) > _rank(limit):
            reasons.append(f"refused: tier {verdict.tier} is above the allowed {limit}")
        ok = not verdict.blocked and _rank(verdict.tier) <= _rank(limit)
        return PolicyReply(tier=verdict.tier, allowed=ok, reasons=reasons)


_RULES = TypeAdapter(list[PolicyRule])


def load_rules(path: Path) -> list[PolicyRule]:
    """Rules from a JSON file (a list, or ``{"rules": [...]}``) or a TOML file (``[[rules]]``)."""
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    if isinstance(data, dict):
        data = data.get("rules", [])
    return _RULES.validate_python(data)


_SEXUAL = [
    "nsfw", "porn*", "hentai", "xxx", "sex", "sexual", "sexually", "intercourse", "orgasm*",
    "genital*", "penis*", "vagina*", "nipple*", "naked", "nude", "nudity", "topless",
    "bottomless", "erotic*", "fetish*", "bdsm", "masturbat*", "ahegao",
]  # fmt: skip
_SUGGESTIVE = [
    "sexy", "seductive", "sensual", "lingerie", "cleavage", "provocative", "suggestive",
    "underwear", "pin-up", "boudoir",
]  # fmt: skip
_MINORS = [
    "child*", "kid", "minor", "underage", "teen", "teenager*", "loli*", "shota*",
    "schoolgirl*", "schoolboy*", "young girl", "young boy", "little girl", "little boy",
    "toddler*", "infant*", "baby", "babies", "preteen*",
]  # fmt: skip

#: A small starting set; a deployment replaces it with its own rules file.
DEFAULT_RULES: list[PolicyRule] = [
    PolicyRule(name="minors-sexual", tier="explicit", terms=_MINORS,
               requires=_SEXUAL + _SUGGESTIVE, block=True),
    PolicyRule(name="sexual", tier="explicit", terms=_SEXUAL),
    PolicyRule(name="suggestive", tier="mature", terms=_SUGGESTIVE),
    PolicyRule(name="gore", tier="mature", terms=[
        "gore", "gory", "blood", "bloody", "bloodied", "corpse", "dead body", "decapitat*",
        "dismember*", "mutilat*", "disembowel*", "torture*", "entrails", "severed head",
    ]),
    PolicyRule(name="drugs", tier="mature", terms=[
        "cocaine", "heroin", "methamphetamine", "crack pipe", "drug use", "overdose",
    ]),
]  # fmt: skip
