"""Fixtures for the simulator's own tests: in-process simulators with any knobs, and media files
to upload (made with the simulator's own encoders, so the tests need nothing else)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from comfyline.comfyui_sim import SimConfig, create_app
from comfyline.comfyui_sim.nodes.encode import write_audio, write_video
from comfyline.comfyui_sim.nodes.media import Images, speech
from comfyline.testkit.comfyui import ComfyClient


@pytest.fixture
async def make_sim(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ComfyClient]]]:
    """`await make_sim(step_time=0.01, ...)`: a fresh simulator (data dir `tmp_path/simN`)."""
    started: list[tuple[TestServer, ComfyClient]] = []

    async def make(**knobs: Any) -> ComfyClient:
        knobs.setdefault("data_dir", tmp_path / f"sim{len(started)}")
        knobs.setdefault("history_delay", 0.0)
        server = TestServer(create_app(SimConfig(**knobs)), host="127.0.0.1")
        await server.start_server()
        client = ComfyClient(str(server.make_url("")))
        started.append((server, client))
        return client

    yield make
    for server, client in started:
        await client.close()
        await server.close()


@pytest.fixture
async def sim(make_sim: Callable[..., Awaitable[ComfyClient]]) -> ComfyClient:
    """A simulator with default knobs (no history delay), data dir `tmp_path/sim0`."""
    return await make_sim()


@pytest.fixture
def speech_flac(tmp_path: Path) -> bytes:
    """Two seconds of a voice-like sound as FLAC."""
    path = tmp_path / "speech.flac"
    write_audio(path, speech("reference voice", 2.0, 16000), "flac", "flac")
    return path.read_bytes()


@pytest.fixture
def face_video(tmp_path: Path) -> bytes:
    """A one-second 25 fps 64x48 H.264 MP4 with sound."""
    path = tmp_path / "face.mp4"
    images = Images.pattern("face", 25, 48, 64)
    write_video(path, images, 25.0, "h264", "mp4", audio=speech("face voice", 1.0, 16000))
    return path.read_bytes()
