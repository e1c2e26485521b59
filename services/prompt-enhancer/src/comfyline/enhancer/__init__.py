"""The prompt-enhancer: prompts made better and fitted to each model's token budget.

``enhance.v1`` enhances (normalise, catalogue presets and quality tags, an optional LLM rewrite)
and fits the model's budget with a real tokenizer; ``policy.v1`` classifies prompts into content
tiers. Both are NATS request/reply services in the queue group ``enhancer``. See docs/prompts.md.
"""

from .budget import Fit, Unfittable, fit, prompt_tokens
from .cache import TtlCache
from .fragments import Fragment, Source, atoms, join, plain_text, split, weighted_segments
from .llm import ChatClient, LlmUnavailable, clean_reply
from .normalise import add_tags, normalise
from .policy import DEFAULT_RULES, ContentPolicy, PolicyRule, Verdict, load_rules
from .service import Enhancer, parse_request
from .settings import CacheSettings, LlmSettings, PolicySettings, Settings, StylePreset
from .strategies import Plan, Strategy, UnknownPreset, fit_prompts, plan
from .tokenizers import ClipTokenizer, EstimateTokenizer, Tokenizer, clip_tokenizer, tokenizer_for

__all__ = [
    "DEFAULT_RULES",
    "CacheSettings",
    "ChatClient",
    "ClipTokenizer",
    "ContentPolicy",
    "Enhancer",
    "EstimateTokenizer",
    "Fit",
    "Fragment",
    "LlmSettings",
    "LlmUnavailable",
    "Plan",
    "PolicyRule",
    "PolicySettings",
    "Settings",
    "Source",
    "Strategy",
    "StylePreset",
    "Tokenizer",
    "TtlCache",
    "Unfittable",
    "UnknownPreset",
    "Verdict",
    "add_tags",
    "atoms",
    "clean_reply",
    "clip_tokenizer",
    "fit",
    "fit_prompts",
    "join",
    "load_rules",
    "normalise",
    "parse_request",
    "plain_text",
    "plan",
    "prompt_tokens",
    "split",
    "tokenizer_for",
    "weighted_segments",
]
