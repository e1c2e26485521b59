"""The ComfyUI protocol suite runs against both servers in the same run: the Comfyline ComfyUI
simulator (one per session, started as a subprocess) and a real ComfyUI (`COMFYUI_URL`, or one
started from the cache; see the `real_comfyui` fixture), so the simulator cannot drift.

Every test asserts a fact of docs/comfyui-protocol.md (shared/docs/comfyui-protocol.md) using
only model-free stock node classes, so it also passes on a CPU-only real ComfyUI.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from comfyline.comfyui_sim.launcher import SimulatorProcess
from comfyline.testkit.comfyui import ComfyClient, ServerInfo, of_type

#: ImageBlur stands in for slow work: ~1 s per node on a real CPU, this much in the simulator.
SIMULATOR_ARGS = ("--node-delay", "ImageBlur=0.25")


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.fixture(
    scope="session",
    params=["simulator", pytest.param("real", marks=pytest.mark.real_comfyui)],
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerInfo]:
    process = None
    data_dir = None
    if request.param == "real":
        url = str(request.getfixturevalue("real_comfyui"))
    else:
        data_dir = tmp_path_factory.mktemp("comfyui-sim")
        process = SimulatorProcess(data_dir, args=SIMULATOR_ARGS).start()
        url = process.url
    try:
        stats = _get(f"{url}/system_stats")
        info = _get(f"{url}/object_info")
        assert isinstance(stats, dict) and isinstance(info, dict)
        yield ServerInfo(
            url=url,
            version=str(stats["system"]["comfyui_version"]),
            simulator="simulator" in stats["system"],
            classes=frozenset(info),
            data_dir=data_dir,
        )
    finally:
        if process is not None:
            process.stop()


@pytest.fixture
def need(server: ServerInfo) -> Callable[..., None]:
    """`need("SaveImageWebsocket")` skips the test when a node class is not installed."""

    def check(*classes: str) -> None:
        missing = server.missing(*classes)
        if missing:
            pytest.skip(f"node class(es) not installed on this server: {', '.join(missing)}")

    return check


@pytest.fixture
async def comfy(server: ServerInfo) -> AsyncIterator[ComfyClient]:
    """A client; afterwards the server is left idle (nothing pending, nothing running)."""
    client = ComfyClient(server.url)
    try:
        yield client
    finally:
        await _settle(client)
        await client.close()


async def _settle(client: ComfyClient) -> None:
    await client.post("/queue", {"clear": True})
    reply = await client.get("/prompt")
    if reply.json()["exec_info"]["queue_remaining"] == 0:
        return
    watcher = await client.connect()
    await client.post("/interrupt")
    reply = await client.get("/prompt")
    if reply.json()["exec_info"]["queue_remaining"] != 0:
        await watcher.wait_for(
            lambda f: (
                of_type("status")(f) and f.data["status"]["exec_info"]["queue_remaining"] == 0
            ),
            within=60,
        )
