"""Budget fitting: within budget, added tags first, the user's words kept first and whole."""

from __future__ import annotations

import random
import re

import pytest

from comfyline.contracts import ErrorCode
from comfyline.enhancer import (
    Source,
    Unfittable,
    add_tags,
    clip_tokenizer,
    fit,
    normalise,
    prompt_tokens,
    tokenizer_for,
)
from comfyline.enhancer.tokenizers import TokenizerName

CLIP = clip_tokenizer()
GROUP = re.compile(r"\([^()]*\)")


def test_a_prompt_within_budget_is_unchanged() -> None:
    fragments = normalise("a red fox, snow")
    result = fit(fragments, 75, CLIP)
    assert (result.text, result.compressed, result.dropped) == ("a red fox, snow", False, [])
    assert result.tokens == prompt_tokens(CLIP, "a red fox, snow") == 5


def test_weight_markup_costs_no_tokens() -> None:
    assert prompt_tokens(CLIP, "(a photo of a cat:1.3)") == 5
    assert prompt_tokens(CLIP, "((a photo)), \\(cat\\)") == 2 + 1 + 3


def test_added_tags_go_before_the_users_words() -> None:
    user = normalise("a red fox, deep snow, golden hour")  # 3 + 1 + 2 + 1 + 2 = 9 tokens
    tagged = add_tags(user, ["cinematic still", "film grain"], Source.PRESET)
    tagged = add_tags(tagged, ["masterpiece", "best quality"], Source.QUALITY)
    assert prompt_tokens(CLIP, "a red fox, deep snow, golden hour") == 9

    quality_gone = fit(tagged, 9 + 1 + 2 + 1 + 2, CLIP)
    assert quality_gone.text == "a red fox, deep snow, golden hour, cinematic still, film grain"
    assert quality_gone.dropped == ["best quality", "masterpiece"]

    presets_gone = fit(tagged, 9, CLIP)
    assert presets_gone.text == "a red fox, deep snow, golden hour"
    assert presets_gone.dropped == ["best quality", "masterpiece", "film grain", "cinematic still"]
    assert presets_gone.compressed and presets_gone.tokens == 9


def test_the_users_own_words_are_trimmed_from_the_end_at_fragment_boundaries() -> None:
    user = normalise("a red fox, deep snow, golden hour, (film grain:1.2), bokeh")
    result = fit(add_tags(user, ["masterpiece"], Source.QUALITY), 6, CLIP)
    assert result.text == "a red fox, deep snow"
    assert result.dropped == ["masterpiece", "bokeh", "(film grain:1.2)", "golden hour"]
    assert result.tokens == 6


def test_a_lone_fragment_is_trimmed_by_whole_words_and_groups() -> None:
    prompt = "a wizard (casting a spell:1.2) over the sleeping city at night under stars"
    result = fit(normalise(prompt), 7, CLIP)  # one token per word here
    assert result.text == "a wizard (casting a spell:1.2) over the"
    assert result.dropped == ["sleeping city at night under stars"]
    assert result.tokens == 7
    result = fit(normalise(prompt), 4, CLIP)
    assert result.text == "a wizard"  # the group does not fit whole, so it goes whole


def test_a_single_group_longer_than_the_budget_is_refused() -> None:
    with pytest.raises(Unfittable) as refused:
        fit(normalise("(a photo of a cat in the snow at night:1.2), fox"), 4, CLIP)
    assert refused.value.code == ErrorCode.VALIDATION_ERROR


WORDS = (
    "fox snow forest golden hour light mist river stone castle dragon knight portrait "
    "cinematic dramatic volumetric reflection neon rain alley cyberpunk watercolor"
).split()


def words_of(text: str) -> set[str]:
    return {w.rstrip(".") for w in re.split(r"[\s,]+", text) if w}


def random_prompt(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 40)):
        words = " ".join(rng.sample(WORDS, rng.randint(1, 5)))
        if rng.random() < 0.25:
            words = f"({words}:{rng.choice(['0.8', '1.2', '1.4'])})"
        parts.append(words)
    return rng.choice([", ", ". "]).join(parts)


@pytest.mark.parametrize(
    ("tokenizer_name", "budget"),
    [("clip", 75), ("clip", 12), ("clip", 3), ("estimate", 175), ("estimate", 20)],
)
def test_fitted_prompts_re_tokenize_within_budget_and_keep_words_whole(
    tokenizer_name: TokenizerName, budget: int
) -> None:
    tokenizer = tokenizer_for(tokenizer_name)
    rng = random.Random(budget)
    for _ in range(150):
        prompt = random_prompt(rng)
        user = normalise(prompt)
        tagged = add_tags(user, rng.sample(WORDS, 4), Source.PRESET)
        tagged = add_tags(tagged, ["masterpiece", "best quality"], Source.QUALITY)
        try:
            result = fit(tagged, budget, tokenizer)
        except Unfittable:
            assert max(prompt_tokens(tokenizer, g) for g in GROUP.findall(prompt)) > budget
            continue
        assert result.tokens == prompt_tokens(tokenizer, result.text) <= budget
        assert set(GROUP.findall(result.text)) <= set(GROUP.findall(prompt))
        assert words_of(result.text) <= words_of(" ".join(f.text for f in tagged))
        kept_user = [f for f in result.fragments if f.source == Source.USER]
        if result.fragments and len(kept_user) < len(user):
            assert all(f.source == Source.USER for f in result.fragments)  # no tag outlives a word
        if len(kept_user) > 1 or (kept_user and kept_user[0] == user[0]):
            assert kept_user == user[: len(kept_user)]  # the user's words kept first, in order
