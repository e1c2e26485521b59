"""Prompts split at top-level separators only; the text ComfyUI reads has no weight markup."""

from __future__ import annotations

import random

import pytest

from comfyline.enhancer import Fragment, Source, atoms, join, plain_text, split, weighted_segments
from comfyline.enhancer.fragments import syntax_groups


def texts(prompt: str) -> list[str]:
    return [f.text for f in split(prompt)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a red fox, snow", ["a red fox", "snow"]),
        ("  a   red\nfox ,snow  ,, ", ["a red fox", "snow"]),
        ("(red, gold:1.2), fox", ["(red, gold:1.2)", "fox"]),
        ("((a, b)), [c, d:e:0.5], {x, y|z}, w", ["((a, b))", "[c, d:e:0.5]", "{x, y|z}", "w"]),
        ("\\(not a group, really\\), fox", ["\\(not a group", "really\\)", "fox"]),
        (
            "A fox runs. The camera pans! Snow falls",
            ["A fox runs", "The camera pans", "Snow falls"],
        ),
        ("v1.5 model, x.pt file, 3.5 stars", ["v1.5 model", "x.pt file", "3.5 stars"]),
        (
            "embedding:bad-hands.pt, (embedding:good:1.1)",
            ["embedding:bad-hands.pt", "(embedding:good:1.1)"],
        ),
        ("wait... then; go", ["wait", "then", "go"]),
        (
            "\u8272\u8c03\uff0c\u8fc7\u66dd\u3002\u9759\u6001",
            ["\u8272\u8c03", "\u8fc7\u66dd", "\u9759\u6001"],
        ),
        ("(unclosed, group, here", ["(unclosed, group, here"]),
        ("stray), close, ok", ["stray)", "close", "ok"]),
    ],
)
def test_split(prompt: str, expected: list[str]) -> None:
    assert texts(prompt) == expected


def test_split_records_separators_and_source() -> None:
    fragments = split("a fox. snow, ice", Source.LLM)
    assert [(f.sep, f.source) for f in fragments] == [
        (".", Source.LLM),
        (",", Source.LLM),
        ("", Source.LLM),
    ]


@pytest.mark.parametrize(
    "prompt",
    [
        "a red fox, snow, (golden hour:1.2)",
        "A fox runs. The camera pans! Snow falls.",
        "\u8272\u8c03\uff0c\u8fc7\u66dd\u3002",
        "one",
    ],
)
def test_join_gives_back_a_normalised_prompt(prompt: str) -> None:
    assert join(split(prompt)) == prompt


def test_join_drops_a_trailing_comma_and_separates_added_fragments() -> None:
    assert join([Fragment("a", ","), Fragment("b", ",")]) == "a, b"
    assert join([Fragment("a", ""), Fragment("b", "")]) == "a, b"
    assert join([Fragment("a", "."), Fragment("b", "!")]) == "a. b!"


def test_groups_are_never_split() -> None:
    rng = random.Random(3)
    words = ["fox", "snow", "light", "mist", "gold", "ice"]
    for _ in range(200):
        groups: list[str] = []
        parts: list[str] = []
        for _ in range(rng.randint(1, 6)):
            inner = ", ".join(rng.sample(words, rng.randint(1, 3)))
            kind = rng.choice(["plain", "weight", "nested", "bracket"])
            if kind == "plain":
                parts.append(inner)
                continue
            group = {
                "weight": f"({inner}:{rng.choice(['0.8', '1.2', '1.35'])})",
                "nested": f"(({inner}))",
                "bracket": f"[{inner}]",
            }[kind]
            groups.append(group)
            parts.append(group)
        fragments = texts(rng.choice([", ", ". ", "; "]).join(parts))
        for group in groups:
            assert any(group in f for f in fragments), (group, fragments)
        for f in fragments:
            assert f.count("(") == f.count(")") and f.count("[") == f.count("]")


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("(cat:1.2)", [("cat", 1.2)]),
        ("a (cat:0.5) dog", [("a ", 1.0), ("cat", 0.5), (" dog", 1.0)]),
        ("(cat)", [("cat", pytest.approx(1.1))]),
        ("((cat))", [("cat", pytest.approx(1.21))]),
        ("(a (b:1.5):1.2)", [("a ", 1.2), ("b", 1.5)]),
        ("\\(cat\\)", [("(cat)", 1.0)]),
        ("(embedding:foo)", [("embedding:foo", pytest.approx(1.1))]),
        ("(red, gold:1.2)", [("red, gold", 1.2)]),
        ("(unclosed", [("(unclosed", 1.0)]),
    ],
)
def test_weighted_segments_read_like_comfyui(text: str, segments: list[tuple[str, float]]) -> None:
    assert weighted_segments(text) == segments


def test_plain_text_drops_markup_only() -> None:
    assert plain_text("(red fox:1.3), ((snow)), \\(lit\\)") == "red fox , snow , (lit)"
    assert plain_text("[a:b:0.5] <lora:x:1>") == "[a:b:0.5] <lora:x:1>"  # literal to ComfyUI


def test_atoms_keep_groups_whole() -> None:
    assert atoms("a (red fox:1.2) in [deep, snow] x(y z)w \\( q") == [
        "a",
        "(red fox:1.2)",
        "in",
        "[deep, snow]",
        "x(y z)w",
        "\\(",
        "q",
    ]


def test_syntax_groups_are_what_the_user_wrote_on_purpose() -> None:
    text = "a (red  fox:1.2), ((snow)), [a:b:0.5], \\(lit\\), embedding:bad-hands.pt, {a|b}, x"
    assert syntax_groups(text) == [
        "(red fox:1.2)",
        "((snow))",
        "[a:b:0.5]",
        "{a|b}",
        "embedding:bad-hands.pt",
    ]
    assert syntax_groups("a plain prompt, 1.5 stars") == []


def test_keys_ignore_case_spacing_and_weights() -> None:
    assert Fragment("Red  Fox").key == Fragment("red fox").key
    assert Fragment("(red fox:1.2)").key != Fragment("red fox").key
    assert Fragment("(red fox:1.2)").plain_key == Fragment("red fox").plain_key
