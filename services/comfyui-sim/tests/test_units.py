"""Unit tests of the simulator's internals: execution order, signatures, naming rules,
validation helpers, the history store, and the node catalogue's specs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from comfyline.comfyui_sim import DEFAULT_MODELS, SimConfig, config_from_args
from comfyline.comfyui_sim.graph import ExecutionList, Signatures
from comfyline.comfyui_sim.history import History
from comfyline.comfyui_sim.nodes import ALL_NODES, NodeEnv, NodeRegistry
from comfyline.comfyui_sim.paths import DataDirs, SavePathError, save_target
from comfyline.comfyui_sim.validation import Validator, validate_node_input
from comfyline.testkit.comfyui import txt2img_graph


@pytest.fixture
def registry(tmp_path: Path) -> NodeRegistry:
    return NodeRegistry(NodeEnv(SimConfig(), DataDirs.create(tmp_path)))


def order_of(graph: dict[str, Any], registry: NodeRegistry, outputs: list[str]) -> list[str]:
    def is_output(node: str) -> bool:
        cls = registry.get(graph[node]["class_type"])
        return cls is not None and cls.OUTPUT_NODE

    plan = ExecutionList(graph, is_cached=lambda _: False, is_output=is_output)
    for output in outputs:
        plan.add_node(output)
    order = []
    while not plan.is_empty():
        node = plan.stage()
        order.append(node)
        plan.complete(node)
    return order


def test_nodes_run_in_dependency_order_not_id_order(registry: NodeRegistry) -> None:
    order = order_of(txt2img_graph(), registry, ["9"])
    assert order.index("4") < order.index("6") < order.index("3") < order.index("8")
    assert order[-1] == "9" and order.index("5") < order.index("3")


def test_output_nodes_run_as_soon_as_they_are_ready(registry: NodeRegistry) -> None:
    graph: dict[str, Any] = {
        "1": {"class_type": "EmptyImage", "inputs": {}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    assert order_of(graph, registry, ["4", "2"]) == ["1", "2", "3", "4"]


def test_signatures_ignore_node_ids_and_follow_inputs(registry: NodeRegistry) -> None:
    graph = txt2img_graph(seed=1)
    renamed = {("x" + k): v for k, v in json.loads(json.dumps(graph)).items()}
    for node in renamed.values():
        for key, value in node["inputs"].items():
            if isinstance(value, list):
                node["inputs"][key] = ["x" + value[0], value[1]]
    same = Signatures(graph, registry).of("9") == Signatures(renamed, registry).of("x9")
    reseeded = Signatures(txt2img_graph(seed=2), registry)
    assert same
    assert Signatures(graph, registry).of("4") == reseeded.of("4")
    assert Signatures(graph, registry).of("3") != reseeded.of("3")


def test_save_target_counts_up_and_refuses_to_escape(tmp_path: Path) -> None:
    target = save_target("video/clip", tmp_path)
    assert (target.subfolder, target.filename, target.counter) == ("video", "clip", 1)
    (target.folder / "clip_00007_.mp4").write_bytes(b"")
    (target.folder / "clipper_00009_.mp4").write_bytes(b"")
    assert save_target("video/clip", tmp_path).counter == 8
    with pytest.raises(SavePathError):
        save_target("../outside", tmp_path)


def test_annotated_names_pick_their_folder(tmp_path: Path) -> None:
    dirs = DataDirs.create(tmp_path)
    assert dirs.annotated("a.png [temp]") == ("a.png", dirs.temp)
    assert dirs.annotated("a.png [output]") == ("a.png", dirs.output)
    assert dirs.annotated("sub/a.png") == ("sub/a.png", None)


def test_link_types_match_by_union_and_wildcard() -> None:
    assert validate_node_input("IMAGE", "IMAGE")
    assert validate_node_input("INT", "FLOAT,INT")
    assert validate_node_input("*", "LATENT")
    assert not validate_node_input("INT", "IMAGE")
    assert not validate_node_input("STRING", ["a", "b"])


def test_dependent_outputs_collect_every_failing_output(registry: NodeRegistry) -> None:
    bad = {"class_type": "EmptyImage",
           "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}}  # fmt: skip
    graph = {
        "1": bad,
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    verdict = Validator(registry, SimConfig().release).validate_prompt(graph)
    assert not verdict.ok
    assert verdict.node_errors["1"]["dependent_outputs"] == ["2", "3"]


def test_history_keeps_order_and_windows(tmp_path: Path) -> None:
    history = History(max_size=3)
    for index in range(6):
        history.put(f"p{index}", {"n": index})
    kept = list(history.get_many())
    assert len(kept) <= 4 and kept[-1] == "p5"
    assert list(history.get_many(max_items=2)) == kept[-2:]
    assert history.get("nope") == {}


def test_every_node_spec_is_well_formed_json(registry: NodeRegistry) -> None:
    info = json.loads(json.dumps(registry.object_info()))
    assert set(info) == {cls.CLASS for cls in ALL_NODES}
    for name, entry in info.items():
        assert len(entry["output"]) == len(entry["output_name"]) == len(entry["output_is_list"])
        for group, specs in entry["input"].items():
            if group == "hidden":
                continue
            for input_name, spec in specs.items():
                assert isinstance(spec, list) and 1 <= len(spec) <= 2, (name, input_name)
                assert isinstance(spec[0], str | list), (name, input_name)
                if spec[0] == "COMBO" and "remote" not in spec[1]:
                    assert isinstance(spec[1]["options"], list)
        assert entry["input_order"] == {k: list(v) for k, v in entry["input"].items()}


def test_default_models_include_the_catalogue_models() -> None:
    assert "RealVisXL_V5.0_Lightning_fp16.safetensors" in DEFAULT_MODELS["checkpoints"]
    assert "svd_xt_1_1.safetensors" in DEFAULT_MODELS["checkpoints"]
    assert "unet.pth" in DEFAULT_MODELS["sonic"]
    assert "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors" in DEFAULT_MODELS["diffusion_models"]


def test_command_line_builds_the_config(tmp_path: Path) -> None:
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"loras": ["a.safetensors"]}))
    config = config_from_args([
        "--port", "0", "--step-time", "0.5", "--node-delay", "ImageBlur=0.2",
        "--model", "checkpoints/extra.safetensors", "--models-json", str(models),
        "--disable-node", "VHS_VideoCombine", "--fail-node", "KSampler",
        "--drop-ws-at", "SaveImage", "--die-at", "VAEDecode", "--view-delay", "1",
        "--png-compress-level", "0", "--comfyui-version", "0.33.0", "--history-delay", "0",
    ])  # fmt: skip
    assert config.step_time == 0.5 and config.node_delay("ImageBlur") == 0.2
    assert "extra.safetensors" in config.models["checkpoints"]
    assert config.models["loras"] == ("a.safetensors",)
    assert config.disabled_nodes == {"VHS_VideoCombine"}
    assert config.fail_nodes == frozenset({"KSampler"})
    assert config.drop_ws_nodes == frozenset({"SaveImage"})
    assert config.die_nodes == frozenset({"VAEDecode"})
    assert config.view_delay == 1 and config.png_compress_level == 0
    assert config.release.has_jobs_api and config.history_delay == 0


@pytest.mark.parametrize("module", ["comfyline.comfyui_sim", "comfyline.testkit.comfyui"])
def test_all_lists_only_real_public_names(module: str) -> None:
    imported = importlib.import_module(module)
    assert imported.__all__ == sorted(imported.__all__, key=lambda n: (not n.isupper(), n))
    for name in imported.__all__:
        assert getattr(imported, name) is not None, name
