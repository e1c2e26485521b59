"""Rule-based normalisation: the clean-up every prompt gets, whatever the strategy.

- Unicode in NFC form, control characters removed, whitespace runs collapsed;
- split into fragments (see :mod:`.fragments`), empty ones (``a,,b``) left out;
- duplicates removed, the first one kept (``cat, Cat`` -> ``cat``); a weight counts, so
  ``(cat:1.2), cat`` keeps both, since the user may mean both;
- weight groups, escapes, embeddings (``embedding:name``) and A1111 syntax kept exactly as written.

Added tags go through :func:`add_tags`, which skips any tag the prompt already has in any weight.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from .fragments import Fragment, Source, join, split

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def clean(text: str) -> str:
    """``text`` in NFC form without control characters (tabs and newlines become spaces later)."""
    return _CONTROL.sub("", unicodedata.normalize("NFC", text))


def dedupe(fragments: Iterable[Fragment]) -> list[Fragment]:
    """``fragments`` without repeats (same text, case and spacing aside), first ones kept."""
    seen: set[str] = set()
    out: list[Fragment] = []
    for fragment in fragments:
        if fragment.key not in seen:
            seen.add(fragment.key)
            out.append(fragment)
    return out


def normalise(prompt: str, source: Source = Source.USER) -> list[Fragment]:
    """The fragments of ``prompt``, cleaned and without duplicates."""
    return dedupe(split(clean(prompt), source))


def add_tags(fragments: list[Fragment], tags: Iterable[str], source: Source) -> list[Fragment]:
    """``fragments`` followed by each of ``tags`` that is not there yet, in any weight.

    A tag may itself hold commas (a default negative prompt): each of its fragments is added on
    its own, so the budget fitter can still drop them one by one.
    """
    out = list(fragments)
    seen = {f.plain_key for f in out}
    for tag in tags:
        for fragment in split(clean(tag), source):
            if fragment.plain_key not in seen:
                seen.add(fragment.plain_key)
                out.append(fragment)
    return out


def normalised_text(prompt: str) -> str:
    """``prompt`` normalised, as text (for callers that only want the clean-up)."""
    return join(normalise(prompt))
