"""Normalisation: whitespace, duplicates and empty pieces go; weight syntax stays as written."""

from __future__ import annotations

from comfyline.enhancer import Source, add_tags, join, normalise
from comfyline.enhancer.normalise import clean, normalised_text


def test_whitespace_and_empty_fragments() -> None:
    assert normalised_text("  a  red\tfox ,, ,snow\n\n,  ") == "a red fox, snow"


def test_duplicates_go_first_kept() -> None:
    assert normalised_text("Red Fox, snow, red  fox, SNOW, ice") == "Red Fox, snow, ice"


def test_a_weight_makes_a_different_fragment() -> None:
    assert normalised_text("(fox:1.2), fox, (fox:1.2)") == "(fox:1.2), fox"


def test_weight_syntax_survives_exactly() -> None:
    prompt = "(masterpiece:1.2), ((red, gold)), [a:b:0.5], \\(lit\\), embedding:bad-hands.pt"
    assert normalised_text(prompt) == prompt


def test_control_characters_go_and_unicode_is_composed() -> None:
    assert clean("cafe\u0301\x00\x07") == "caf\u00e9"
    assert normalised_text("a\x00b, c") == "ab, c"


def test_add_tags_skips_what_is_there_in_any_weight() -> None:
    base = normalise("a fox, (masterpiece:1.3)")
    tagged = add_tags(base, ["Masterpiece", "best quality", "best  quality"], Source.QUALITY)
    assert join(tagged) == "a fox, (masterpiece:1.3), best quality"
    assert [f.source for f in tagged] == [Source.USER, Source.USER, Source.QUALITY]


def test_add_tags_splits_a_tag_list_into_fragments() -> None:
    tagged = add_tags([], ["lowres, bad anatomy,  blurry"], Source.QUALITY)
    assert [f.text for f in tagged] == ["lowres", "bad anatomy", "blurry"]
