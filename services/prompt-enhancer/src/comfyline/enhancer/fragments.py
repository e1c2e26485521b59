"""A prompt as a list of fragments, and the text a model actually reads from it.

A fragment is what lies between two top-level separators: commas (``,`` ``;`` and their
full-width forms) and sentence ends (``.`` ``!`` ``?`` followed by a space, or ``。``). Separators
inside brackets do not count, so a weight group such as ``(red, gold:1.2)``, A1111's ``[a:b:0.5]``
or a wildcard ``{a|b}`` is always inside one fragment, and a backslash-escaped ``\\(`` is plain
text. Fragments are the units the budget fitter drops, so nothing ever cuts a weight group or a word
in half; :func:`atoms` gives the smaller units (words and whole groups) for the rare fragment that
is alone too long.

:func:`plain_text` is the prompt as ComfyUI's CLIP text encoder reads it: weight markup removed
(``(cat:1.2)`` reads as ``cat``, weight 1.2), escaped parentheses read as literal ones. Token
counts are made on it, so the markup costs no budget, exactly as in ComfyUI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import IntEnum

_OPEN = frozenset("([{")
_CLOSE = frozenset(")]}")
#: Separators between list items (ASCII and full-width comma, semicolon, ideographic comma).
_COMMAS = frozenset(",;\uff0c\uff1b\u3001")
#: Sentence ends that need a following space (or the end) to count: "1.5" and "x.pt" stay words.
_ENDS = frozenset(".!?")
#: Full-width sentence ends: always a boundary.
_WIDE_ENDS = frozenset("\u3002\uff01\uff1f")
#: Separators written without a following space.
_NO_SPACE_AFTER = frozenset("\uff0c\uff1b\u3001\u3002\uff01\uff1f")


class Source(IntEnum):
    """Where a fragment came from; lower values are dropped first when over budget."""

    QUALITY = 1  # quality tags from the catalogue
    PRESET = 2  # style tags of a preset the user chose
    LLM = 3  # an LLM's rewrite of the user's prompt
    USER = 4  # the user's own words


@dataclass(frozen=True, slots=True)
class Fragment:
    """One comma- or sentence-delimited piece of a prompt, weight syntax intact."""

    text: str
    sep: str = ","
    source: Source = Source.USER

    @property
    def key(self) -> str:
        """What duplicates share: the text as written, case and spacing aside."""
        return " ".join(self.text.casefold().split())

    @property
    def plain_key(self) -> str:
        """What duplicates share, weights aside: ``(cat:1.2)`` and ``cat`` are the same tag."""
        return " ".join(plain_text(self.text).casefold().split())

    def with_source(self, source: Source) -> Fragment:
        """The same fragment, from another source."""
        return replace(self, source=source)


def split(prompt: str, source: Source = Source.USER) -> list[Fragment]:
    """Split ``prompt`` at its top-level separators; empty pieces are left out."""
    fragments: list[Fragment] = []
    buf: list[str] = []
    depth = 0
    i, n = 0, len(prompt)

    def flush(sep: str) -> None:
        text = " ".join("".join(buf).split())
        buf.clear()
        if text:
            fragments.append(Fragment(text, sep, source))

    while i < n:
        ch = prompt[i]
        if ch == "\\" and i + 1 < n:
            buf.append(prompt[i : i + 2])
            i += 2
            continue
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
        elif depth == 0 and (ch in _COMMAS or ch in _WIDE_ENDS):
            flush(ch)
            i += 1
            continue
        elif depth == 0 and ch in _ENDS:
            j = i
            while j < n and prompt[j] in _ENDS:
                j += 1
            if j == n or prompt[j].isspace():
                flush(prompt[i:j])
            else:
                buf.append(prompt[i:j])
            i = j
            continue
        buf.append(ch)
        i += 1
    flush("")
    return fragments


def join(fragments: list[Fragment]) -> str:
    """The text of ``fragments``, each followed by its separator; no trailing comma."""
    parts: list[str] = []
    last = len(fragments) - 1
    for i, fragment in enumerate(fragments):
        sep = fragment.sep or ","
        if i == last:
            keeps_end = fragment.sep and fragment.sep[0] in (_ENDS | _WIDE_ENDS)
            parts.append(fragment.text + (fragment.sep if keeps_end else ""))
        else:
            space = "" if sep[-1] in _NO_SPACE_AFTER else " "
            parts.append(fragment.text + sep + space)
    return "".join(parts)


def atoms(text: str) -> list[str]:
    """The words of ``text``, a bracketed group (with what is attached to it) counting as one."""
    out: list[str] = []
    buf: list[str] = []
    depth = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            buf.append(text[i : i + 2])
            i += 2
            continue
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
        elif depth == 0 and ch.isspace():
            if buf:
                out.append("".join(buf))
                buf.clear()
            i += 1
            continue
        buf.append(ch)
        i += 1
    if buf:
        out.append("".join(buf))
    return out


_EMBEDDING = re.compile(r"embedding:[^\s,:()\[\]{}]+")


def syntax_groups(text: str) -> list[str]:
    """The bracketed groups (``(cat:1.2)``, ``[a:b:0.5]``) and embeddings written in ``text``.

    These are what a user wrote on purpose in prompt syntax; an LLM rewrite must keep them.
    """
    groups: list[str] = []
    depth, start = 0, 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch in _OPEN:
            if depth == 0:
                start = i
            depth += 1
        elif ch in _CLOSE and depth > 0:
            depth -= 1
            if depth == 0:
                groups.append(" ".join(text[start : i + 1].split()))
        i += 1
    groups.extend(m.group(0) for m in _EMBEDDING.finditer(text) if m.group(0) not in groups)
    return groups


# --- what ComfyUI reads ----------------------------------------------------------------------
# ComfyUI's CLIP tokenizer (comfy/sd1_clip.py) first hides escaped parentheses, then splits the
# text into top-level "(...)" groups, reads a trailing ":<float>" inside a group as its weight
# (a bare group multiplies the weight by 1.1) and recurses; every segment is then tokenized on
# its own. The functions below follow the same rules, including for unbalanced parentheses.

_ESC_CLOSE, _ESC_OPEN = "\0\1", "\0\2"


def _top_level(text: str) -> list[str]:
    items: list[str] = []
    current = ""
    depth = 0
    for ch in text:
        if ch == "(":
            if depth == 0:
                if current:
                    items.append(current)
                current = "("
            else:
                current += ch
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                items.append(current + ")")
                current = ""
            else:
                current += ch
        else:
            current += ch
    if current:
        items.append(current)
    return items


def _weighted(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for item in _top_level(text):
        if len(item) >= 2 and item[0] == "(" and item[-1] == ")":
            inner = item[1:-1]
            inner_weight = weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1 :])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out.extend(_weighted(inner, inner_weight))
        else:
            out.append((item, weight))
    return out


def weighted_segments(text: str) -> list[tuple[str, float]]:
    """The segments ComfyUI encodes, each with its weight: ``(cat:1.2) dog`` -> cat 1.2, dog 1.0."""
    hidden = text.replace("\\)", _ESC_CLOSE).replace("\\(", _ESC_OPEN)
    return [
        (segment.replace(_ESC_CLOSE, ")").replace(_ESC_OPEN, "("), weight)
        for segment, weight in _weighted(hidden, 1.0)
    ]


def plain_text(text: str) -> str:
    """The text ComfyUI's CLIP encoder tokenizes, weight markup removed.

    Segments are joined with a space: ComfyUI tokenizes each segment on its own, and CLIP never
    merges tokens across a space, so the count is the same.
    """
    words = (" ".join(segment.split()) for segment, _ in weighted_segments(text))
    return " ".join(w for w in words if w)
