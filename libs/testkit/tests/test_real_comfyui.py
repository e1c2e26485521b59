"""The real-ComfyUI cache: a finished install is reused, an install by hand is adopted."""

from __future__ import annotations

import io
from pathlib import Path

from comfyline.testkit.real_comfyui import VERSION, Installation


def fake_tree(root: Path) -> Installation:
    installation = Installation(root)
    (installation.venv / "bin").mkdir(parents=True)
    installation.python.write_text("")
    installation.source.mkdir()
    return installation


def test_an_install_by_hand_that_ended_with_done_is_adopted(tmp_path: Path) -> None:
    installation = fake_tree(tmp_path / f"comfyui-{VERSION}")
    (installation.root / "install.log").write_text("pip ...\nDONE\n")
    assert not installation.ready
    log = io.StringIO()
    installation.ensure(log)
    assert installation.ready and installation.marker.is_file()
    assert log.getvalue() == ""  # nothing was installed
    assert installation.ensure(log) == 0.0


def test_a_tree_without_its_marker_is_not_ready(tmp_path: Path) -> None:
    installation = fake_tree(tmp_path / f"comfyui-{VERSION}")
    assert not installation.ready
    assert "no real ComfyUI" in installation.why_not_ready()
