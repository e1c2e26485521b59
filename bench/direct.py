"""The baseline: what a client pays talking to ComfyUI directly, with no Comfyline in between.

One job = open the WebSocket, POST /prompt, wait for the final ``executing {node: null}``,
download every output with /view. That is the least any caller of ComfyUI does.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import websockets


async def run_direct(comfyui_url: str, graph: dict[str, Any], client: httpx.AsyncClient) -> float:
    """Run one graph on ComfyUI and fetch its outputs; returns seconds taken."""
    client_id = uuid.uuid4().hex
    prompt_id = str(uuid.uuid4())
    ws_url = comfyui_url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
    started = time.perf_counter()
    outputs: list[dict[str, str]] = []
    async with websockets.connect(ws_url, max_size=None) as ws:
        posted = await client.post(
            f"{comfyui_url}/prompt",
            json={"prompt": graph, "client_id": client_id, "prompt_id": prompt_id},
        )
        posted.raise_for_status()
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                continue
            frame = json.loads(raw)
            data = frame.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if frame["type"] == "executed":
                for files in data["output"].values():
                    outputs += [f for f in files if isinstance(f, dict) and "filename" in f]
            if frame["type"] == "execution_error":
                raise RuntimeError(data.get("exception_message"))
            if frame["type"] == "executing" and data.get("node") is None:
                break
    for file in outputs:
        view = await client.get(f"{comfyui_url}/view", params=file)
        view.raise_for_status()
    return time.perf_counter() - started
