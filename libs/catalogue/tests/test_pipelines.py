"""Pipeline templates are checked whole; provider and pipeline entries are valid catalogue data."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from comfyline.catalogue import Catalogue, InputInvalid, validate_input
from comfyline.catalogue.pipelines import (
    PipelineInvalid,
    check_step_inputs,
    child_job_id,
    final_steps,
    ready,
    step_input,
    step_order,
    validate_pipeline,
)
from comfyline.contracts import ModelTemplate, OutputKind, OutputRef, PipelineStep, new_job_id

CATALOGUE = Catalogue.builtin()
ASSET = "ast_" + "0" * 26


def pipeline(*steps: PipelineStep, **params: object) -> ModelTemplate:
    return ModelTemplate(
        name="p",
        version=1,
        kind="pipeline",
        title="p",
        description="p",
        parameters={"type": "object", "properties": {"prompt": {"type": "string"}, **params}},
        steps=list(steps),
    )


def test_the_built_in_pipelines_are_valid_and_ordered() -> None:
    talking = CATALOGUE.get("talking-portrait")
    validate_pipeline(talking, CATALOGUE)
    assert step_order(talking)[-1] == "lipsync"
    assert [s.name for s in ready(talking, set(), set())] == ["portrait", "speech"]
    assert [s.name for s in ready(talking, {"portrait"}, {"portrait", "speech"})] == []
    assert [s.name for s in ready(talking, {"portrait", "speech"}, {"portrait", "speech"})] == [
        "lipsync"
    ]
    assert final_steps(talking) == ["lipsync"]
    clip = CATALOGUE.get("image-to-clip")
    validate_pipeline(clip, CATALOGUE)
    assert step_order(clip) == ["image", "clip"]


@pytest.mark.parametrize("name", ["talking-portrait", "image-to-clip", "dalle3", "flux1"])
def test_non_comfyui_entries_have_a_usable_schema(name: str) -> None:
    template = CATALOGUE.get(name)
    Draft202012Validator.check_schema(template.parameters)
    assert template.parameters.get("additionalProperties") is False
    assert template.engine in ("pipeline", "provider") and not template.graph
    assert template.outputs


def test_a_step_input_names_inputs_and_earlier_outputs_by_job() -> None:
    talking = CATALOGUE.get("talking-portrait")
    lipsync = next(s for s in talking.steps if s.name == "lipsync")
    ids = {"portrait": new_job_id(), "speech": new_job_id()}
    out = OutputRef(index=0, key="k", kind=OutputKind.IMAGE, content_type="image/png", size=1)
    data = step_input(lipsync, {"resolution": 256}, {"portrait": [out], "speech": [out]}, ids)
    assert data == {
        "image": {"job": ids["portrait"], "output": 0},
        "audio": {"job": ids["speech"], "output": 0},
        "resolution": 256,
    }
    validate_input(CATALOGUE.get("lipsync"), data)
    speech = next(s for s in talking.steps if s.name == "speech")
    assert step_input(speech, {"text": "hi"}, {}, ids) == {"text": "hi"}  # no voice given


@pytest.mark.parametrize(
    ("steps", "code"),
    [
        (
            [PipelineStep(name="a", model="no-such-model", input={})],
            "pipeline_unknown_reference",
        ),
        (
            [PipelineStep(name="a", model="txt2img-sdxl", input={"colour": "red"})],
            "pipeline_unknown_reference",
        ),
        (
            [PipelineStep(name="a", model="txt2img-sdxl", input={"prompt": {"input": "nope"}})],
            "pipeline_unknown_reference",
        ),
        (
            [PipelineStep(name="a", model="img2vid-wan", input={"image": {"step": "ghost"}})],
            "pipeline_unknown_reference",
        ),
        (
            [
                PipelineStep(name="a", model="img2vid-wan", input={"image": {"step": "c"}}),
                PipelineStep(name="b", model="img2vid-wan", input={"image": {"step": "a"}}),
                PipelineStep(name="c", model="img2vid-wan", input={"image": {"step": "b"}}),
            ],
            "pipeline_cycle",
        ),
        (
            [
                PipelineStep(name="a", model="txt2vid-wan", input={"prompt": "x"}),
                PipelineStep(name="b", model="img2vid-wan", input={"image": {"step": "a"}}),
            ],
            "pipeline_kind_mismatch",
        ),
        (
            [
                PipelineStep(name="a", model="txt2img-sdxl", input={"prompt": "x"}),
                PipelineStep(name="b", model="txt2img-sdxl", input={"prompt": {"step": "a"}}),
            ],
            "pipeline_kind_mismatch",
        ),
    ],
)
def test_an_invalid_pipeline_is_refused_with_its_code(steps: list[PipelineStep], code: str) -> None:
    with pytest.raises(PipelineInvalid) as refused:
        validate_pipeline(pipeline(*steps), CATALOGUE)
    assert refused.value.code.value == code


def test_a_cycle_names_its_steps() -> None:
    loop = pipeline(
        PipelineStep(name="a", model="img2vid-wan", input={"image": {"step": "b"}}),
        PipelineStep(name="b", model="img2vid-wan", input={"image": {"step": "a"}}),
    )
    with pytest.raises(PipelineInvalid) as refused:
        validate_pipeline(loop, CATALOGUE)
    assert refused.value.details["cycle"] in (["a", "b", "a"], ["b", "a", "b"])


def test_child_job_ids_are_stable_valid_and_sort_beside_their_parent() -> None:
    parent = new_job_id()
    first, again, other = (
        child_job_id(parent, "portrait"),
        child_job_id(parent, "portrait"),
        child_job_id(parent, "speech"),
    )
    assert first == again != other
    assert first[:14] == parent[:14] and len(first) == len(parent)
    schema = {"type": "string", "pattern": "^job_[0-9a-z]{26}$"}
    assert not list(Draft202012Validator(schema).iter_errors(first))


def test_step_inputs_are_checked_before_any_step_runs() -> None:
    needs_image = pipeline(
        PipelineStep(name="a", model="txt2img-sdxl", input={"prompt": {"input": "prompt"}}),
        PipelineStep(
            name="b",
            model="img2vid-wan",
            input={"image": {"step": "a"}, "prompt": {"input": "prompt"}, "fps": 999},
        ),
    )
    validate_pipeline(needs_image, CATALOGUE)  # the template is sound ...
    with pytest.raises(InputInvalid) as refused:  # ... but this input fails its second step
        check_step_inputs(needs_image, CATALOGUE, {"prompt": "a boat"})
    assert refused.value.details["step"] == "b"
    assert refused.value.details["errors"][0]["field"] == "fps"
    with pytest.raises(InputInvalid) as missing:  # a required input the caller left out
        check_step_inputs(needs_image, CATALOGUE, {})
    assert missing.value.details["step"] == "a"
    check_step_inputs(CATALOGUE.get("image-to-clip"), CATALOGUE, {"prompt": "a boat"})
