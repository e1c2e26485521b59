"""Capability from /object_info (all three combo forms), settings from the environment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

import comfyline.worker as worker_pkg
from comfyline.catalogue import Catalogue
from comfyline.worker.capability import Capability, combo_options
from comfyline.worker.replay import Transcript
from comfyline.worker.settings import Settings


def test_combo_options_in_every_form() -> None:
    assert combo_options([["a.safetensors", "b.safetensors"]]) == ["a.safetensors", "b.safetensors"]
    assert combo_options([["a"], {"tooltip": "x"}]) == ["a"]
    assert combo_options(["COMBO", {"options": ["a", "b"], "image_upload": True}]) == ["a", "b"]
    assert combo_options(["INT", {"default": 1}]) is None
    assert combo_options(["IMAGE"]) is None


def info(options: list[str], form: str) -> dict[str, Any]:
    spec: object = {
        "list": [options],
        "list+dict": [options, {}],
        "COMBO": ["COMBO", {"options": options}],
    }[form]
    nodes: dict[str, Any] = {
        name: {"input": {"required": {}}}
        for name in ["CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"]
    }
    nodes["CheckpointLoaderSimple"] = {"input": {"required": {"ckpt_name": spec}}}
    return nodes


@pytest.mark.parametrize("form", ["list", "list+dict", "COMBO"])
def test_a_model_is_servable_only_with_its_nodes_and_files(form: str) -> None:
    template = Catalogue.builtin().get("txt2img-sdxl")
    files = [m.file for m in template.required_models]
    assert Capability.from_object_info(info(files, form)).missing(template) == []
    lacks = Capability.from_object_info(info(files[:1], form)).missing(template)
    assert lacks == [f"model CheckpointLoaderSimple.ckpt_name={files[1]}"]
    no_sampler = info(files, form)
    del no_sampler["KSampler"]
    assert Capability.from_object_info(no_sampler).missing(template) == ["node KSampler"]


def test_capability_of_a_stock_cpu_comfyui_serves_only_cpu_smoke(
    transcript: Callable[[str], Transcript],
) -> None:
    summary = next(
        s
        for s in transcript("14_http_misc")["steps"]
        if s["dir"] == "http" and s["request"]["path"] == "/object_info/EmptyImage"
    )["response"]["json"]
    stock = {**summary, "SaveImage": {"input": {"required": {}}}}
    assert Capability.from_object_info(stock).servable(Catalogue.builtin()) == ["cpu-smoke"]


def test_settings_read_urls_as_a_list_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_COMFYUI_URLS", "http://a:8188/, http://b:8188")
    monkeypatch.setenv("WORKER_MODELS", "cpu-smoke,tts")
    monkeypatch.setenv("WORKER_NATS__URL", "nats://n:4222")
    settings = Settings()
    assert settings.comfyui_urls == ["http://a:8188", "http://b:8188"]
    assert settings.models == ["cpu-smoke", "tts"]
    assert settings.nats.url == "nats://n:4222"
    monkeypatch.setenv("WORKER_COMFYUI_URLS", '["http://c:1"]')
    monkeypatch.delenv("WORKER_MODELS")
    settings = Settings()
    assert settings.comfyui_urls == ["http://c:1"] and settings.models is None
    assert settings.worker_id.endswith(str(__import__("os").getpid()))


def test_settings_refuse_no_server_and_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_COMFYUI_URLS", "")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("WORKER_COMFYUI_URLS", "http://a:1,http://a:1/")
    with pytest.raises(ValidationError):
        Settings()


def test_package_exports_what_it_says() -> None:
    for name in worker_pkg.__all__:
        assert hasattr(worker_pkg, name), name
    assert sorted(worker_pkg.__all__) == worker_pkg.__all__
