"""The simulator's `/object_info` agrees with a real ComfyUI's for every node class both have.

File lists differ by design (the simulator lists the catalogue's model files, a real server
without weights lists none, and each server lists its own input folder) and so do a few prose
fields; everything a client builds on
is compared: the entry's keys, names, category, module, flags, outputs, input order, and each
input's type and option keys.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyline.comfyui_sim.launcher import SimulatorProcess

pytestmark = pytest.mark.real_comfyui

PROSE = {"description", "tooltip"}
#: Combo inputs that list files (models, the input folder): compared by form, not by content.
FILE_LISTS = {"ckpt_name", "clip_name", "lora_name", "unet_name", "vae_name", "image"}


def _object_info(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/object_info", timeout=30) as answer:
        info: dict[str, Any] = json.loads(answer.read())
    return info


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with SimulatorProcess(Path(tmp_path_factory.mktemp("sim-parity"))) as sim:
        yield sim.url


def _shape(name: str, spec: Any) -> Any:
    if not isinstance(spec, list) or not spec:
        return spec
    head = "combo" if isinstance(spec[0], list) else spec[0]
    if name in FILE_LISTS and isinstance(spec[0], list):
        return [head, sorted(set(spec[1]) - PROSE) if len(spec) > 1 else None]
    extra = {k: v for k, v in spec[1].items() if k not in PROSE} if len(spec) > 1 else None
    if isinstance(spec[0], list) and extra is not None:
        return [head, spec[0], extra]
    if isinstance(spec[0], list):
        return [head, spec[0]]
    return [head, extra] if len(spec) > 1 else [head]


def _comparable(entry: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k not in PROSE | {"input", "output_tooltips"}}
    out["keys"] = sorted(entry)
    out["input"] = {
        group: {name: _shape(name, spec) for name, spec in specs.items()}
        for group, specs in entry["input"].items()
    }
    return out


def test_object_info_agrees_for_every_class_both_servers_have(
    simulator: str, real_comfyui: str
) -> None:
    sim, real = _object_info(simulator), _object_info(real_comfyui)
    common = sorted(set(sim) & set(real))
    assert len(common) >= 30, common
    differences = {
        name: {
            key: (_comparable(sim[name]).get(key), _comparable(real[name]).get(key))
            for key in set(_comparable(sim[name])) | set(_comparable(real[name]))
            if _comparable(sim[name]).get(key) != _comparable(real[name]).get(key)
        }
        for name in common
        if _comparable(sim[name]) != _comparable(real[name])
    }
    assert differences == {}, json.dumps(differences, indent=1)[:6000]
