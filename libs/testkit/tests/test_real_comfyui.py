"""The real-ComfyUI cache: a finished install is reused, an install by hand is adopted."""

from __future__ import annotations

import io
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comfyline.testkit.fixtures import real_comfyui_required
from comfyline.testkit.real_comfyui import VERSION, Installation, server_env


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


def test_comfyui_runs_one_torch_thread_that_sleeps_when_idle_unless_told_otherwise() -> None:
    env = server_env({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    chosen = server_env({"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "2"})
    assert chosen["OMP_WAIT_POLICY"] == "ACTIVE" and chosen["OMP_NUM_THREADS"] == "2"


def running(pid: int) -> bool:
    """True while ``pid`` runs (an ended process not yet reaped is a zombie: ``Z``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _start_run() -> subprocess.Popen[str]:
    """``python -m comfyline.testkit.real_comfyui run``, its output read through a pipe (a skip,
    or a failure where a real ComfyUI is required, when none is installed)."""
    installation = Installation()
    if not installation.ready:
        if real_comfyui_required():
            pytest.fail(f"a real ComfyUI is required here: {installation.why_not_ready()}")
        pytest.skip(installation.why_not_ready())
    command = [sys.executable, "-m", "comfyline.testkit.real_comfyui", "run"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.real_comfyui
def test_comfyui_ends_with_the_run_command_however_that_ends() -> None:
    """``run`` killed outright (SIGKILL: no handler runs) takes its ComfyUI with it. (Its
    folders stay, as after any crash: the test removes them.)"""
    wrapper = _start_run()
    folders: Path | None = None
    try:
        assert wrapper.stdout is not None
        line = wrapper.stdout.readline()  # printed once ComfyUI answers
        assert line.startswith("COMFYUI_URL="), line
        line = wrapper.stdout.readline()
        assert line.startswith("COMFYUI_OUTPUT_DIR="), line
        folders = Path(line.split("=", 1)[1].strip()).parent
        children = Path(f"/proc/{wrapper.pid}/task/{wrapper.pid}/children").read_text().split()
        [comfyui] = [int(pid) for pid in children]
        wrapper.kill()
        wrapper.wait(timeout=10)
        deadline = time.monotonic() + 20
        while running(comfyui) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(comfyui), "ComfyUI outlived the run command"
        assert folders.is_dir()  # (nothing ran to remove them)
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait(timeout=10)
        if folders is not None:
            shutil.rmtree(folders, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.real_comfyui
def test_run_stopped_by_two_signals_at_once_still_removes_its_folders() -> None:
    """A second SIGTERM while ``run`` stops ComfyUI (a wrapper passing on the signal its caller
    sent the whole group, a second Ctrl-C) does not cut the stop short: ComfyUI ends and the
    folders ``run`` made are gone."""
    wrapper = _start_run()
    try:
        assert wrapper.stdout is not None
        assert wrapper.stdout.readline().startswith("COMFYUI_URL=")
        line = wrapper.stdout.readline()
        assert line.startswith("COMFYUI_OUTPUT_DIR="), line
        folders = Path(line.split("=", 1)[1].strip()).parent
        assert folders.is_dir()
        children = Path(f"/proc/{wrapper.pid}/task/{wrapper.pid}/children").read_text().split()
        [comfyui] = [int(pid) for pid in children]
        wrapper.send_signal(signal.SIGTERM)
        time.sleep(0.05)  # (while it stops ComfyUI)
        wrapper.send_signal(signal.SIGTERM)
        assert wrapper.wait(timeout=30) == 0
        assert not running(comfyui), "ComfyUI outlived the run command"
        assert not folders.exists(), "run left its folders behind"
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait(timeout=10)
