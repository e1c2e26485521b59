"""Fixtures of the worker's unit tests: the recorded real-ComfyUI transcripts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from comfyline.worker.replay import Transcript, load

ROOT = Path(__file__).resolve().parents[3]
#: The recordings of a real ComfyUI 0.3.64, kept in the repository beside the protocol suite.
TRANSCRIPTS = ROOT / "tests" / "comfyui_protocol" / "transcripts"


@pytest.fixture(scope="session")
def transcript() -> Callable[[str], Transcript]:
    """``transcript("01_uncached_run")``: one recording, which must exist."""

    def get(name: str) -> Transcript:
        path = TRANSCRIPTS / f"{name}.json"
        assert path.exists(), f"transcript {path} is missing from the repository"
        return load(path)

    return get
