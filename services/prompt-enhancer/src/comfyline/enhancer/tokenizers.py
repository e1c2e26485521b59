"""Token counters: how many tokens a model's text encoder reads from a piece of text.

Budgets are in tokens, not words, so every model family gets a real count where we can ship its
tokenizer, and a documented, conservative estimate where we cannot. The catalogue entry of a model
says which applies (``PromptSpec.tokenizer``):

- ``clip``: the CLIP BPE tokenizer that SD 1.x and both SDXL text encoders use, from
  ``instant-clip-tokenizer`` (a compiled wheel that carries the vocabulary: nothing is downloaded
  and nothing pulls in torch). It is kept behind :class:`Tokenizer`, an interface of ours, because
  that package has had no release since 2023. Counts leave out the start and end markers, so 75 is
  one full CLIP window (77 with the markers).
- ``estimate``: for encoders whose tokenizer we cannot ship, such as WAN's umT5-XXL SentencePiece
  model. See :class:`EstimateTokenizer` for the rule and why it errs high.

These count raw text. What a model reads from a prompt with ComfyUI's weight syntax is counted by
:func:`comfyline.enhancer.budget.prompt_tokens`, which removes the syntax first, as ComfyUI does.
"""

from __future__ import annotations

import math
import re
from functools import cache
from typing import Literal, Protocol

import instant_clip_tokenizer

TokenizerName = Literal["clip", "estimate"]

#: instant-clip-tokenizer turns these literal strings into the special marker tokens; ComfyUI's
#: tokenizer reads them as plain text, so they are broken up before encoding ("<" is its own
#: pre-token either way, so the space changes nothing else).
_MARKERS = re.compile(r"<(start_of_text|end_of_text)>")

#: Characters of scripts written without spaces (CJK, kana, hangul, full-width forms).
_WIDE = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]+")


class Tokenizer(Protocol):
    """Counts the tokens a text encoder makes of a text."""

    @property
    def name(self) -> TokenizerName:
        """The name the catalogue uses for this tokenizer (``PromptSpec.tokenizer``)."""
        ...

    def count(self, text: str) -> int:
        """How many tokens ``text`` becomes, without start/end markers."""
        ...


class ClipTokenizer:
    """CLIP's byte-level BPE (lower-cased, OpenAI's vocabulary of 49408 tokens)."""

    def __init__(self) -> None:
        self._impl = instant_clip_tokenizer.Tokenizer()

    @property
    def name(self) -> TokenizerName:
        return "clip"

    def encode(self, text: str) -> list[int]:
        """CLIP's token ids for ``text`` (no start/end markers)."""
        return [int(t) for t in self._impl.encode(_MARKERS.sub(r"< \1>", text))]

    def count(self, text: str) -> int:
        return len(self.encode(text))


class EstimateTokenizer:
    """A conservative estimate for encoders whose tokenizer we cannot ship (umT5 for WAN).

    The rule, meant to err high so that a prompt fitted by it fits the real encoder:

    - Characters of scripts written without spaces (Chinese, Japanese, Korean, full-width
      punctuation) count one token each, plus one per run: SentencePiece vocabularies such as
      umT5's hold these as single pieces or merge common pairs, so one per character is an upper
      bound for them, whereas CLIP's byte-level BPE would count two or three per character.
    - Everything else counts as CLIP's BPE count times ``factor`` (1.25 by default), rounded up.
      umT5's vocabulary (256k pieces) is five times CLIP's, so Latin-script words split into as
      few pieces or fewer; the margin covers where SentencePiece still spends more (a separate
      word-start piece before some punctuation, rare words).

    It is an estimate, not a bound for every possible text: a model whose tokenizer can be shipped
    should get a real one.
    """

    def __init__(self, clip: ClipTokenizer, factor: float = 1.25) -> None:
        if factor < 1.0:
            raise ValueError("an estimate below the CLIP count would not be conservative")
        self._clip = clip
        self.factor = factor

    @property
    def name(self) -> TokenizerName:
        return "estimate"

    def count(self, text: str) -> int:
        wide = _WIDE.findall(text)
        rest = _WIDE.sub(" ", text) if wide else text
        latin = self._clip.count(rest)
        return math.ceil(latin * self.factor - 1e-9) + sum(len(run) + 1 for run in wide)


@cache
def clip_tokenizer() -> ClipTokenizer:
    """The process's one CLIP tokenizer (building one reads the vocabulary: about 70 ms)."""
    return ClipTokenizer()


def tokenizer_for(name: TokenizerName, estimate_factor: float = 1.25) -> Tokenizer:
    """The tokenizer a catalogue entry names."""
    if name == "clip":
        return clip_tokenizer()
    if name == "estimate":
        return EstimateTokenizer(clip_tokenizer(), estimate_factor)
    raise ValueError(f"unknown tokenizer {name!r}")
