"""Every template in the catalogue: well-formed, internally consistent, and renderable."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from comfyline.catalogue import (
    ASSET_REF_FORMS,
    Catalogue,
    InputInvalid,
    asset_params,
    builtin_voices,
    compose_prompt,
    parse_asset_ref,
    prepare_input,
    render,
    validate_input,
)
from comfyline.catalogue.assets import AssetRef, BuiltinVoice, JobOutputRef
from comfyline.contracts import ModelTemplate

CATALOGUE = Catalogue.builtin()
TEMPLATES = [t for t in CATALOGUE if t.engine == "comfyui"]  # see test_pipelines.py for the rest
IDS = [t.name for t in TEMPLATES]
ASSET = "ast_" + "0" * 26
JOB = "job_" + "1" * 26
SAVE_KEYS = {
    "SaveImage": "images",
    "SaveAudio": "audio",
    "SaveAudioMP3": "audio",
    "SaveVideo": "images",
    "SaveAnimatedWEBP": "images",
    "VHS_VideoCombine": "gifs",
}
EXAMPLES: dict[str, dict[str, Any]] = {
    "cpu-smoke": {},
    "txt2img-sdxl": {"prompt": "a red fox in snow"},
    "inpaint-sdxl": {"image": ASSET, "mask": ASSET, "prompt": "a wooden bench"},
    "portrait": {"description": "an old sailor with a grey beard"},
    "tts": {"text": "Hello there.", "voice": ASSET},
    "lipsync": {"image": {"job": JOB, "output": 0}, "audio": {"job": JOB}},
    "lipsync-video": {"video": ASSET, "audio": ASSET},
    "img2vid-wan": {"image": ASSET, "prompt": "the waves roll in"},
    "txt2vid-wan": {"prompt": "a paper boat on a river"},
}


def test_the_catalogue_has_every_job_kind_users_need() -> None:
    assert set(IDS) == set(EXAMPLES)
    assert {t.kind for t in TEMPLATES} == {
        "smoke",
        "image",
        "inpaint",
        "portrait",
        "tts",
        "lipsync",
        "video",
    }


def test_file_names_match_model_names() -> None:
    folder = resources.files("comfyline.catalogue").joinpath("models")
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            assert json.loads(entry.read_text())["name"] == entry.name.removesuffix(".json")


def links(graph: dict[str, dict[str, Any]]) -> list[tuple[str, str, list[Any]]]:
    return [
        (node_id, name, value)
        for node_id, node in graph.items()
        for name, value in node["inputs"].items()
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)
    ]


def choice_values(template: ModelTemplate, param: str) -> list[Any]:
    """Values that ``x-sets`` (or presets) can give an internal parameter."""
    found: list[Any] = []
    for spec in template.parameters["properties"].values():
        for sets in spec.get("x-sets", {}).values():
            if param in sets:
                found.append(sets[param])
    return found


@pytest.mark.parametrize("template", TEMPLATES, ids=IDS)
def test_template_is_consistent(template: ModelTemplate) -> None:
    Draft202012Validator.check_schema(template.parameters)
    props = template.parameters["properties"]
    graph = template.graph
    assert template.parameters.get("additionalProperties") is False
    # every link points at an existing node
    for node_id, name, (source, _) in links(graph):
        assert source in graph, f"{node_id}.{name} links to missing node {source}"
    # bindings point at real node inputs, and their parameter exists somewhere
    composed = template.prompt.param if template.prompt and template.prompt.compose else None
    for binding in template.bindings:
        assert binding.node in graph, binding
        assert binding.input in graph[binding.node]["inputs"], binding
        assert (
            binding.param in props
            or choice_values(template, binding.param)
            or binding.param == composed
        ), f"{binding.param} is neither a parameter, a choice's value nor the composed prompt"
    # outputs exist, on save nodes, under the key that node reports
    for out in template.outputs:
        assert SAVE_KEYS[graph[out.node]["class_type"]] == out.key
    # required_nodes cover the graph exactly
    assert set(template.required_nodes) == {n["class_type"] for n in graph.values()}
    # each required model file is what its loader gets (literally or through a choice)
    for model in template.required_models:
        values = [
            node["inputs"].get(model.input)
            for node in graph.values()
            if node["class_type"] == model.node_class
        ]
        for binding in template.bindings:
            if (
                graph[binding.node]["class_type"] == model.node_class
                and binding.input == model.input
            ):
                values += choice_values(template, binding.param)
        assert model.file in values, model
    # choices: one per enum value
    for name, spec in props.items():
        if "x-sets" in spec:
            assert sorted(spec["x-sets"]) == sorted(spec["enum"]), name
    # defaults are valid
    for spec in props.values():
        if "default" in spec:
            Draft202012Validator(spec).validate(spec["default"])
    # presets only set parameters, with valid values
    for preset, preset_values in template.presets.items():
        for name, value in preset_values.items():
            assert name in props, (preset, name)
            Draft202012Validator(props[name]).validate(value)
    # asset parameters take exactly the documented references
    for param in asset_params(template):
        assert props[param]["oneOf"][:2] == ASSET_REF_FORMS
        for extra in props[param]["oneOf"][2:]:  # built-in voices, by name
            assert extra["enum"] == builtin_voices()
        assert props[param]["x-asset-kinds"]
    assert template.deadlines.run_s > 0 and template.retry_limit >= 0


@pytest.mark.parametrize("template", TEMPLATES, ids=IDS)
def test_template_renders_an_example(template: ModelTemplate) -> None:
    data = validate_input(template, EXAMPLES[template.name])
    prepared = prepare_input(template, data)
    assets = {p: f"comfyline/{p}.bin" for p in asset_params(template)}
    graph = render(template, prepared, assets)
    for binding in template.bindings:
        value = graph[binding.node]["inputs"][binding.input]
        if binding.transform == "asset":
            assert value == assets[binding.param]
        elif binding.param in prepared and binding.transform is None:
            assert value == prepared[binding.param], binding
    if template.prompt is not None:
        assert compose_prompt(template, prepared)
    if "seed" in template.parameters["properties"]:
        assert 0 <= data["seed"] < 2**32


def test_sdxl_limits_and_presets() -> None:
    template = CATALOGUE.get("txt2img-sdxl")
    for bad in (
        {"width": 1000},
        {"width": 4096},
        {"steps": 0},
        {"steps": 101},
        {"cfg": 31},
        {"prompt": "x" * 2001},
        {"sampler": "bogus"},
    ):
        with pytest.raises(InputInvalid):
            validate_input(template, {"prompt": "ok", **bad})
    fast = render(template, prepare_input(template, validate_input(template, {"prompt": "a"})))
    high = render(
        template,
        prepare_input(template, validate_input(template, {"prompt": "a", "preset": "high"})),
    )
    assert fast["4"]["inputs"]["ckpt_name"] == "RealVisXL_V5.0_Lightning_fp16.safetensors"
    assert (fast["3"]["inputs"]["steps"], high["3"]["inputs"]["steps"]) == (5, 30)
    assert high["4"]["inputs"]["ckpt_name"] == "RealVisXL_V5.0_fp16.safetensors"
    own = validate_input(template, {"prompt": "a", "preset": "high", "steps": 12})
    assert own["steps"] == 12  # the user's value wins over the preset's


def test_portrait_composes_its_prompt_from_the_fields() -> None:
    template = CATALOGUE.get("portrait")
    data = validate_input(
        template,
        {
            "description": "red hair, freckles",
            "style": "anime",
            "gender": "female",
            "expression": "smiling",
        },
    )
    prompt = compose_prompt(template, data)
    assert prompt is not None
    assert prompt.startswith(
        "portrait of a woman, red hair, freckles, smiling expression, anime style"
    )
    graph = render(template, prepare_input(template, data))
    assert graph["6"]["inputs"]["text"] == prompt
    assert graph["7"]["inputs"]["text"].startswith("photo, realistic")
    with pytest.raises(InputInvalid):
        validate_input(template, {"description": "x", "prompt": "bypass the template"})
    with pytest.raises(InputInvalid):
        validate_input(template, {"description": "x", "style": "cubist"})
    # an orchestrator's (enhanced) prompt is kept as given
    enhanced = prepare_input(template, {**data, "prompt": "enhanced words"})
    assert render(template, enhanced)["6"]["inputs"]["text"] == "enhanced words"


def test_tts_speed_range() -> None:
    template = CATALOGUE.get("tts")
    for speed in (0.4, 2.1):
        with pytest.raises(InputInvalid):
            validate_input(template, {"text": "hi", "voice": ASSET, "speed": speed})
    data = validate_input(template, {"text": "hi", "voice": ASSET, "speed": 1.5})
    graph = render(template, prepare_input(template, data), {"voice": "comfyline/v.flac"})
    assert (
        graph["2"]["inputs"]["speed"] == 1.5 and graph["1"]["inputs"]["audio"] == "comfyline/v.flac"
    )


def test_wan_duration_resolution_and_presets() -> None:
    template = CATALOGUE.get("img2vid-wan")
    fast = prepare_input(template, validate_input(template, EXAMPLES["img2vid-wan"]))
    graph = render(template, fast, {"image": "comfyline/i.png"})
    assert graph["50"]["inputs"]["length"] == 81  # 5 s at 16 fps -> 4n+1
    assert (graph["50"]["inputs"]["width"], graph["50"]["inputs"]["height"]) == (832, 480)
    assert (graph["57"]["inputs"]["steps"], graph["57"]["inputs"]["end_at_step"]) == (4, 2)
    assert (
        graph["58"]["inputs"]["start_at_step"] == 2
        and graph["41"]["inputs"]["strength_model"] == 1.0
    )
    high = prepare_input(
        template,
        validate_input(template, {**EXAMPLES["img2vid-wan"], "preset": "high", "duration_s": 3}),
    )
    graph = render(template, high, {"image": "comfyline/i.png"})
    assert (graph["50"]["inputs"]["width"], graph["50"]["inputs"]["height"]) == (1280, 720)
    assert graph["50"]["inputs"]["length"] == 49 and graph["58"]["inputs"]["steps"] == 20
    assert graph["41"]["inputs"]["strength_model"] == 0.0
    portrait = prepare_input(
        template,
        validate_input(template, {**EXAMPLES["img2vid-wan"], "resolution": "480p-portrait"}),
    )
    assert (portrait["width"], portrait["height"]) == (480, 832)
    with pytest.raises(InputInvalid):
        validate_input(template, {**EXAMPLES["img2vid-wan"], "duration_s": 9})


def test_asset_references() -> None:
    assert parse_asset_ref(ASSET) == AssetRef(ASSET)
    assert parse_asset_ref({"job": JOB}) == JobOutputRef(JOB, 0)
    assert parse_asset_ref({"job": JOB, "output": 2}) == JobOutputRef(JOB, 2)
    template = CATALOGUE.get("lipsync")
    for bad in (
        "ast_short",
        {"job": JOB, "output": -1},
        {"job": "job_x"},
        {"job": JOB, "extra": 1},
        42,
    ):
        with pytest.raises(InputInvalid):
            validate_input(template, {"image": bad, "audio": ASSET})
    with pytest.raises(InputInvalid):
        parse_asset_ref({"job": JOB, "output": -1})


def test_a_chosen_seed_stays_within_the_models_range() -> None:
    template = CATALOGUE.get("lipsync")  # SONICSampler takes 31-bit seeds
    top = template.parameters["properties"]["seed"]["maximum"]
    assert top == 2**31 - 1
    seeds = [validate_input(template, {"image": ASSET, "audio": ASSET})["seed"] for _ in range(300)]
    assert max(seeds) <= top and len(set(seeds)) > 250
    assert prepare_input(template, {"image": ASSET, "audio": ASSET})["seed"] <= top


def test_cpu_smoke_still_renders_as_before() -> None:
    template = CATALOGUE.get("cpu-smoke")
    graph = render(template, validate_input(template, {"width": 64, "height": 32, "color": 255}))
    assert graph["1"]["inputs"] == {"width": 64, "height": 32, "batch_size": 1, "color": 255}
    assert graph["2"]["class_type"] == "SaveImage"


def test_docs_describe_every_model_and_parameter() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "models.md").read_text()
    for template in TEMPLATES:
        section = doc.split(f"## `{template.name}`", 1)
        assert len(section) == 2, f"docs/models.md has no section for {template.name}"
        body = section[1].split("\n## ", 1)[0]
        for param in template.parameters["properties"]:
            assert f"`{param}`" in body, f"{template.name}: {param} undocumented"
        for model in template.required_models:
            assert model.file in body, f"{template.name}: {model.file} undocumented"


def test_tts_speaks_in_a_built_in_voice_when_given_none() -> None:
    template = CATALOGUE.get("tts")
    data = prepare_input(template, validate_input(template, {"text": "Hello."}))
    assert data["voice"] in builtin_voices()
    assert data["voice_transcript"].startswith("The quick brown fox")
    ref = parse_asset_ref(data["voice"])
    assert isinstance(ref, BuiltinVoice) and ref.path.read_bytes()[:4] == b"fLaC"
    given = prepare_input(template, {"text": "Hi", "voice": "dune", "voice_transcript": "mine"})
    assert given["voice_transcript"] == "mine"


def test_a_template_read_again_is_validated_by_its_new_schema() -> None:
    """Validators are kept per schema as built (a catalogue read makes new ones): a model
    published again with a wider range validates by the new range, the old one by its own."""
    old = CATALOGUE.get("tts")
    wider = json.loads(json.dumps(old.parameters))
    wider["properties"]["speed"]["maximum"] = 3.0
    new = old.model_copy(update={"parameters": wider})
    fast = {"text": "hi", "voice": ASSET, "speed": 2.5}
    for _ in range(2):  # (the second time from the validators kept)
        with pytest.raises(InputInvalid):
            validate_input(old, fast)
        assert validate_input(new, fast)["speed"] == 2.5
