"""The content policy: tiers by configurable rules, refused above the owner's tier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from comfyline.enhancer import DEFAULT_RULES, ContentPolicy, PolicyRule, load_rules

POLICY = ContentPolicy(DEFAULT_RULES)


@pytest.mark.parametrize(
    ("text", "tier"),
    [
        ("a red fox in the snow, golden hour", "general"),
        ("a knight in a bloody battle", "mature"),
        ("portrait of a woman in lingerie", "mature"),
        ("nsfw, a woman", "explicit"),
        ("(NSFW:1.4), a woman", "explicit"),
        ("nude_female, beach", "explicit"),
        ("nudes on a beach", "explicit"),
        ("a Ｎｕｄｅ statue", "explicit"),  # noqa: RUF001 - full-width letters fold to ASCII
        ("a classic Sussex bloodhound at the seaside", "general"),  # no word inside a word
    ],
)
def test_default_rules_classify(text: str, tier: str) -> None:
    assert POLICY.classify([text]).tier == tier


def test_a_job_above_the_owners_tier_is_refused_and_says_why() -> None:
    refused = POLICY.check(["a fox", "nsfw, a woman"], allowed="general")
    assert (refused.tier, refused.allowed) == ("explicit", False)
    assert any("nsfw" in r for r in refused.reasons)
    assert any("above the allowed general" in r for r in refused.reasons)
    assert POLICY.check(["nsfw, a woman"], allowed="explicit").allowed
    assert POLICY.check(["a bloody battle"], allowed="mature").allowed
    assert not POLICY.check(["a bloody battle"], allowed="general").allowed
    general = POLICY.check(["a red fox"], allowed="general")
    assert (general.tier, general.allowed, general.reasons) == ("general", True, [])


def test_a_blocking_rule_refuses_every_owner() -> None:
    reply = POLICY.check(["nsfw, a child"], allowed="explicit")
    assert reply.allowed is False
    assert any(r.startswith("minors-sexual") for r in reply.reasons)
    assert POLICY.check(["a child flying a kite"], allowed="general").allowed


def test_the_deployment_cap_wins_over_the_owner() -> None:
    capped = ContentPolicy(DEFAULT_RULES, max_tier="mature")
    assert not capped.check(["nsfw"], allowed="explicit").allowed
    assert capped.check(["a bloody battle"], allowed="explicit").allowed


def test_rules_are_configurable() -> None:
    policy = ContentPolicy(
        [
            PolicyRule(name="brand", tier="mature", terms=["acme*"]),
            PolicyRule(name="weapons", tier="explicit", patterns=[r"\bgun\s*fight"]),
            PolicyRule(
                name="combo", tier="general", terms=["clown"], requires=["knife"], block=True
            ),
        ]
    )
    assert policy.classify(["an AcmeCorp logo"]).tier == "mature"
    assert policy.classify(["a gunfight at noon"]).tier == "explicit"
    assert policy.classify(["nsfw"]).tier == "general"  # the defaults are replaced
    assert policy.check(["a clown"], allowed="general").allowed
    assert not policy.check(["a clown with a knife"], allowed="explicit").allowed


def test_rules_load_from_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "policy.toml"
    toml.write_text('[[rules]]\nname = "cats"\ntier = "explicit"\nterms = ["cat"]\n')
    assert ContentPolicy(load_rules(toml)).classify(["two cats"]).tier == "explicit"
    data = [{"name": "dogs", "tier": "mature", "terms": ["dog"]}]
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps(data))
    as_object = tmp_path / "object.json"
    as_object.write_text(json.dumps({"rules": data}))
    for path in (as_list, as_object):
        assert ContentPolicy(load_rules(path)).classify(["a dog"]).tier == "mature"


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValidationError):
        PolicyRule(name="empty", tier="mature")
    with pytest.raises(ValidationError):
        PolicyRule(name="regex", tier="mature", patterns=["(unclosed"])
    with pytest.raises(ValidationError):
        PolicyRule.model_validate({"name": "tier", "tier": "adult", "terms": ["x"]})
