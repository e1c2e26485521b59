"""The recorded ComfyUI 0.3.64 transcripts are fixtures: replaying each scenario against a fresh
simulator gives the same exchanges and frames, ids, timestamps and timings aside.

These always run against the simulator (even when COMFYUI_URL is set): they check the simulator
against the real server's recordings. Each scenario gets its own in-process simulator, with
ImageBlur slowed down to play the part of the real server's ~1 s blur.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from comfyline.comfyui_sim import SimConfig, create_app
from comfyline.testkit.comfyui import ComfyClient, empty_image_graph
from comfyline.testkit.comfyui.replay import replay

TRANSCRIPTS = sorted((Path(__file__).parent / "transcripts").glob("*.json"))

#: What the recording server had done before a scenario began, when the scenario relies on it:
#: the cached rerun follows the uncached run of the same graph; http_misc reads a history.
PREAMBLES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "cached_rerun": lambda transcript: transcript["graph"],
    "http_misc": lambda _: empty_image_graph("preamble"),
}


@pytest.fixture
async def fresh_sim(tmp_path: Path) -> AsyncIterator[ComfyClient]:
    # Scenarios interrupt or queue behind a chain of blurs: each blur takes long enough that the
    # client's next step lands on the same node it did in the recording, even on a busy machine.
    config = SimConfig(data_dir=tmp_path, node_delays={"ImageBlur": 0.6}, history_delay=0.02)
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server()
    client = ComfyClient(str(server.make_url("")))
    try:
        yield client
    finally:
        await client.close()
        await server.close()


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
async def test_transcript_replays_identically(
    path: Path, fresh_sim: ComfyClient, tmp_path: Path
) -> None:
    transcript: dict[str, Any] = json.loads(await asyncio.to_thread(path.read_text))
    preamble = PREAMBLES.get(transcript["scenario"])
    if preamble is not None:
        socket = await fresh_sim.connect()
        await fresh_sim.run(preamble(transcript), socket)
        await socket.close()
    problems = await replay(fresh_sim, transcript, tmp_path / "input")
    assert problems == [], "\n".join(problems)
    for key, folder in (
        ("output_files_with_prefix_after_run", "output"),
        ("input_files_after_uploads", "input"),
    ):
        if key in transcript:
            prefix = transcript[key][0].split("_0")[0].split(" (")[0]
            names = sorted(
                p.name for p in (tmp_path / folder).iterdir() if p.name.startswith(prefix)
            )
            assert names == sorted(transcript[key])
