"""The CLIP tokenizer gives CLIP's own ids and counts; the estimate errs high."""

from __future__ import annotations

import random

import pytest

from comfyline.enhancer import ClipTokenizer, EstimateTokenizer, clip_tokenizer, tokenizer_for

# Ids published independently of instant-clip-tokenizer, each made with OpenAI's CLIP BPE
# (bpe_simple_vocab_16e6): the local-servers doc, open_clip's SimpleTokenizer validation,
# Hugging Face CLIPTokenizer examples for Stable Diffusion, and a C++ port's golden table.
KNOWN_IDS: list[tuple[str, list[int]]] = [
    ("a photo of a cat", [320, 1125, 539, 320, 2368]),
    ("the black dog", [518, 1449, 1929]),
    ("a running dog", [320, 2761, 1929]),
    ("a boy", [320, 1876]),
    ("A person riding a motorcycle", [320, 2533, 6765, 320, 10297]),
    ("  WHEEL\n\t and fruit  ", [6744, 537, 5190]),
    ("a... 're we're don't 10", [320, 678, 982, 649, 982, 847, 713, 272, 271]),
    ("## #@ #...", [15483, 35062, 31491]),
    ("Truck's 123 wheels!", [4629, 568, 272, 273, 274, 8025, 256]),
    (
        "a cute magical flying ghost dog, fantasy art, golden color, high quality",
        [320, 2242, 7823, 4610, 7108, 1929, 267, 5267, 794, 267, 3878, 3140, 267, 1400, 3027],
    ),
]

# Counts that follow from CLIP's rules alone: it lower-cases; it pre-splits into letter runs,
# single digits and punctuation runs, never across a space; a one-character piece is always
# one token (all 256 bytes are in the vocabulary, with and without the end-of-word mark).
DERIVED_COUNTS: list[tuple[str, int]] = [
    ("", 0),
    ("   \n\t ", 0),
    ("A PHOTO OF A CAT", 5),
    ("a   photo\nof\ta cat", 5),
    ("a photo of a cat, a person riding a motorcycle", 11),  # 5 + "," + 5
    ("a photo of a cat. the black dog", 9),  # 5 + "." + 3
    ("2024", 4),  # one token per digit
    ("1.2", 3),  # "1" "." "2"
    ("(a cat:1.2)", 8),  # "(" "a" "cat" ":" "1" "." "2" ")", raw text, weight syntax counted
    ("the black dog the black dog the black dog", 9),
]


@pytest.fixture(scope="module")
def clip() -> ClipTokenizer:
    return clip_tokenizer()


@pytest.mark.parametrize(("text", "ids"), KNOWN_IDS)
def test_ids_match_clip(clip: ClipTokenizer, text: str, ids: list[int]) -> None:
    assert clip.encode(text) == ids
    assert clip.count(text) == len(ids)


@pytest.mark.parametrize(("text", "count"), DERIVED_COUNTS)
def test_counts_follow_clip_rules(clip: ClipTokenizer, text: str, count: int) -> None:
    assert clip.count(text) == count


@pytest.mark.parametrize("char", "!,.?:()[]0123456789a")
def test_single_characters_are_their_byte_token(clip: ClipTokenizer, char: str) -> None:
    # CLIP numbers the printable ASCII bytes "!".."~" first, 0..93; the end-of-word form of
    # each is 256 later. So "," is 256 + 11 = 267 and "a" is 256 + 64 = 320, as above.
    assert clip.encode(char) == [256 + ord(char) - ord("!")]


def test_marker_strings_are_plain_text(clip: ClipTokenizer) -> None:
    # instant-clip-tokenizer alone would make this one special token; ComfyUI reads it as text.
    assert clip.count("<start_of_text>") == clip.count("< start_of_text >") > 1
    assert 49406 not in clip.encode("x <start_of_text> <end_of_text>")


def test_counts_add_up_across_spaces_and_commas(clip: ClipTokenizer) -> None:
    words = "fox snow forest golden hour light mist river stone castle dragon knight".split()
    rng = random.Random(8)
    for _ in range(50):
        pieces = [" ".join(rng.sample(words, rng.randint(1, 4))) for _ in range(rng.randint(1, 6))]
        assert clip.count(", ".join(pieces)) == sum(map(clip.count, pieces)) + len(pieces) - 1


def test_tokenizer_is_shared_and_named() -> None:
    assert clip_tokenizer() is clip_tokenizer()
    assert tokenizer_for("clip").name == "clip"
    assert tokenizer_for("estimate").name == "estimate"
    with pytest.raises(ValueError):
        tokenizer_for("t5")  # type: ignore[arg-type]


def test_estimate_is_above_clip_for_latin_text(clip: ClipTokenizer) -> None:
    estimate = EstimateTokenizer(clip)
    for text, _ in KNOWN_IDS:
        assert estimate.count(text) >= clip.count(text)
    assert estimate.count("a photo of a cat") == 7  # ceil(5 * 1.25)
    assert EstimateTokenizer(clip, factor=2.0).count("a photo of a cat") == 10


def test_estimate_counts_wide_scripts_per_character(clip: ClipTokenizer) -> None:
    estimate = EstimateTokenizer(clip)
    text = "\u8272\u8c03\u8273\u4e3d\uff0c\u8fc7\u66dd"  # 7 characters, one run
    assert estimate.count(text) == 8
    assert clip.count(text) > estimate.count(text)  # byte-level BPE spends 2-3 per character
    assert estimate.count(f"a cat {text}") == 3 + 8  # ceil(2 * 1.25) + 8


def test_estimate_refuses_a_factor_below_one(clip: ClipTokenizer) -> None:
    with pytest.raises(ValueError):
        EstimateTokenizer(clip, factor=0.9)
