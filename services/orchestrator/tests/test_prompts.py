"""Which texts of a job the policy sees, and which prompt the enhancer gets."""

from __future__ import annotations

from comfyline.catalogue import Catalogue, goes_at_once, job_texts
from comfyline.contracts import Binding, PromptSpec
from comfyline.testkit.orchestrator import sample_template


def test_prompt_and_negative_are_read_where_the_template_says() -> None:
    """The prompt spec's ``param`` and ``negative_param``; numbers are not text."""
    texts = job_texts(sample_template(), {"prompt": "a fox", "negative_prompt": "blur", "steps": 4})
    assert (texts.prompt, texts.negative) == ("a fox", "blur")
    assert texts.all() == ["a fox", "blur"]


def test_a_composed_prompt_is_checked_whole() -> None:
    """A template that composes its prompt from fields is checked as composed."""
    template = sample_template(
        prompt=PromptSpec(param="prompt", budget_tokens=75, compose="{style} portrait of {who}"),
        parameters={
            "type": "object",
            "properties": {"style": {"type": "string", "enum": ["oil", "photo"]}, "who": {}},
        },
    )
    texts = job_texts(template, {"style": "oil", "who": "a sailor"})
    assert texts.all() == ["oil portrait of a sailor"]


def test_templates_without_a_prompt_spec_still_show_their_free_text() -> None:
    """No prompt spec: free text is still checked; assets, enums and formats are not text."""
    template = sample_template(
        prompt=None,
        parameters={
            "type": "object",
            "properties": {
                "script": {"type": "string"},
                "voice": {"type": "string", "enum": ["a", "b"]},
                "image": {"type": "string"},
                "url": {"type": "string", "format": "uri"},
            },
        },
        bindings=[Binding(param="image", node="1", input="image", transform="asset")],
    )
    data = {"script": "hello there", "voice": "a", "image": "ast_1", "url": "https://x.test"}
    texts = job_texts(template, data)
    assert (texts.prompt, texts.all()) == (None, ["hello there"])


def test_a_job_with_no_text_has_nothing_to_check() -> None:
    """``cpu-smoke`` takes numbers only: the policy is not asked."""
    assert job_texts(Catalogue.builtin().get("cpu-smoke"), {"width": 64}).all() == []


def test_a_job_goes_at_once_only_with_nothing_to_wait_for() -> None:
    """The one rule the gateway and the orchestrator both send work by."""
    smoke = Catalogue.builtin().get("cpu-smoke")
    plain = {"width": 64, "height": 64, "color": 7}
    ready = {"retry": False, "paused": False, "served": True}
    assert goes_at_once(smoke, plain, **ready)
    assert not goes_at_once(smoke, plain, **(ready | {"retry": True}))
    assert not goes_at_once(smoke, plain, **(ready | {"paused": True}))
    assert not goes_at_once(smoke, plain, **(ready | {"served": False}))
    worded = sample_template()  # a prompt for the content policy and the enhancer
    assert not goes_at_once(worded, {"prompt": "a fox", "steps": 4}, **ready)
    pipeline = next(t for t in Catalogue.builtin() if t.engine == "pipeline")
    assert not goes_at_once(pipeline, {}, **ready)
