"""Fixtures of the worker's unit tests: the recorded real-ComfyUI transcripts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from comfyline.worker.replay import Transcript, load

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def transcript() -> Callable[[str], Transcript]:
    """``transcript("01_uncached_run")``: a recording from shared/comfyui-transcripts.

    The folder is ``$COMFYLINE_TRANSCRIPTS`` or ``shared/comfyui-transcripts`` beside the
    repository (where CI puts it); a test is skipped, saying why, when it is not there.
    """
    configured = os.environ.get("COMFYLINE_TRANSCRIPTS")
    folder = Path(configured) if configured else ROOT.parent / "shared" / "comfyui-transcripts"

    def get(name: str) -> Transcript:
        path = folder / f"{name}.json"
        if not path.exists():
            pytest.skip(f"transcript {path} not available")
        return load(path)

    return get
