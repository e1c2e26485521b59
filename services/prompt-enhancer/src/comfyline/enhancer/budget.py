"""Fitting a prompt into its model's token budget without cutting a word or a weight group.

When the prompt is over budget, whole fragments go first, least important first: quality tags,
then preset (style) tags, then an LLM's or the user's own fragments, each group from its end. Only
when the first fragment is alone over budget is it trimmed, by whole words and whole bracketed
groups from its end (:func:`~.fragments.atoms`). Every count is made on the whole resulting prompt
as the model reads it (:func:`prompt_tokens`), so the result is within budget by construction,
not by an estimate of the pieces.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from comfyline.contracts import ComfylineError, ErrorCode

from .fragments import Fragment, atoms, join, plain_text
from .tokenizers import Tokenizer


class Unfittable(ComfylineError):
    """A single word or weight group is longer than the whole budget."""

    code = ErrorCode.VALIDATION_ERROR


@dataclass(frozen=True, slots=True)
class Fit:
    """A prompt fitted to a budget, and what was dropped to fit it."""

    fragments: list[Fragment]
    text: str
    tokens: int
    dropped: list[str]

    @property
    def compressed(self) -> bool:
        """Whether anything had to go."""
        return bool(self.dropped)


def prompt_tokens(tokenizer: Tokenizer, prompt: str) -> int:
    """Tokens the model reads from ``prompt`` (ComfyUI weight markup costs nothing)."""
    return tokenizer.count(plain_text(prompt))


def drop_order(fragments: list[Fragment]) -> list[int]:
    """Indices of ``fragments`` in the order they go: lowest source first, later before earlier."""
    return sorted(range(len(fragments)), key=lambda i: (fragments[i].source, -i))


def fit(fragments: list[Fragment], budget: int, tokenizer: Tokenizer) -> Fit:
    """``fragments`` within ``budget`` tokens, dropping and trimming as little as possible.

    Raises:
        Unfittable: when the first word or group of the first fragment alone exceeds ``budget``.
    """
    if budget <= 0:
        raise ValueError("budget must be positive")

    def tokens_of(kept: list[Fragment]) -> int:
        return prompt_tokens(tokenizer, join(kept))

    total = tokens_of(fragments)
    if total <= budget:
        return Fit(list(fragments), join(fragments), total, [])

    order = drop_order(fragments)

    def keeping(drops: int) -> list[Fragment]:
        gone = set(order[:drops])
        return [f for i, f in enumerate(fragments) if i not in gone]

    # Fewest drops that fit: dropping more never adds tokens, so a binary search finds it.
    low, high = 1, len(order)
    while low < high:
        mid = (low + high) // 2
        if tokens_of(keeping(mid)) <= budget:
            high = mid
        else:
            low = mid + 1
    drops = low
    dropped = [fragments[i].text for i in order[:drops]]
    if drops < len(order):
        kept = keeping(drops)
        return Fit(kept, join(kept), tokens_of(kept), dropped)

    # Even the most important fragment alone is over budget: keep as many of its words as fit.
    last = order[-1]
    head = fragments[last]
    dropped.pop()
    words = atoms(head.text)
    low, high = 0, len(words)  # all of them may fit once its sentence end goes
    while low < high:
        mid = (low + high + 1) // 2
        if tokens_of([replace(head, text=" ".join(words[:mid]), sep="")]) <= budget:
            low = mid
        else:
            high = mid - 1
    if low == 0:
        raise Unfittable(
            f"the prompt cannot fit {budget} tokens without cutting {words[0][:40]!r} in half",
            details={"budget": budget},
        )
    trimmed = replace(head, text=" ".join(words[:low]), sep="")
    dropped.append(" ".join(words[low:]) or head.sep)
    return Fit([trimmed], join([trimmed]), tokens_of([trimmed]), dropped)
