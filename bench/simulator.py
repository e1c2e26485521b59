"""The ComfyUI simulator's own speed: start-up and a cpu-smoke job, against its targets.

Targets (issue: "starts in under a second and runs cpu-smoke with no configured delay in a few
ms"), shown beside what a real ComfyUI 0.3.64 took on this kind of machine
(docs/comfyui-protocol.md: 8-10 s to start, 15-23 ms median per uncached EmptyImage -> SaveImage).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import websockets

from comfyline.comfyui_sim import SimulatorProcess

START_TARGET_S = 1.0
JOB_TARGET_MS = 10.0
REAL_COMFYUI = {"start_s": "8-10", "job_ms": "15-23"}


def _graph(color: int, size: int) -> dict[str, dict[str, object]]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b"}},
    }


async def _jobs(url: str, count: int, size: int) -> list[float]:
    """POST /prompt until the final ``executing {node: null}``, one socket kept open (as a
    worker does): the server's own time per job, plus one loopback round trip."""
    client_id = uuid.uuid4().hex
    ws_url = url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
    times = []
    async with httpx.AsyncClient(timeout=30) as client, websockets.connect(ws_url) as ws:
        for n in range(count + 3):
            prompt_id = str(uuid.uuid4())
            began = time.perf_counter()
            body = {
                "prompt": _graph((size * 1000 + n) % 0xFFFFFF, size),
                "client_id": client_id,
                "prompt_id": prompt_id,
            }
            (await client.post(f"{url}/prompt", json=body)).raise_for_status()
            while True:
                raw = await ws.recv()
                frame = json.loads(raw) if isinstance(raw, str) else {}
                data = frame.get("data", {})
                if frame.get("type") == "executing" and data.get("node") is None:
                    if data.get("prompt_id") == prompt_id:
                        break
            if n >= 3:  # the first few warm up the encoders
                times.append(time.perf_counter() - began)
    return times


def run(starts: int = 5, jobs: int = 50) -> dict[str, float]:
    """Measure, print, and return the figures."""
    with tempfile.TemporaryDirectory(prefix="comfyline-bench-sim-") as tmp:
        start_times = []
        for n in range(starts):
            sim = SimulatorProcess(Path(tmp) / f"s{n}", args=["--history-delay", "0"])
            began = time.perf_counter()
            sim.start()
            start_times.append(time.perf_counter() - began)
            if n < starts - 1:
                sim.stop()
        try:
            small = asyncio.run(_jobs(sim.url, jobs, 64))
            large = asyncio.run(_jobs(sim.url, jobs, 512))
        finally:
            sim.stop()
    start_s = statistics.median(start_times)
    job_ms = statistics.median(small) * 1000
    large_ms = statistics.median(large) * 1000
    print(f"\nComfyUI simulator ({starts} starts; {jobs} cpu-smoke jobs per size, no delays):")
    print(
        f"  start-up median {start_s:6.2f} s    target < {START_TARGET_S:.0f} s    "
        f"real ComfyUI 0.3.64: {REAL_COMFYUI['start_s']} s"
    )
    print(f"  cpu-smoke 64x64 median {job_ms:5.1f} ms    target < {JOB_TARGET_MS:.0f} ms")
    print(
        f"  cpu-smoke 512x512 median {large_ms:5.1f} ms  (PNG encoding dominates)   "
        f"real ComfyUI 0.3.64: {REAL_COMFYUI['job_ms']} ms"
    )
    for name, ok in (("start-up", start_s < START_TARGET_S), ("cpu-smoke", job_ms < JOB_TARGET_MS)):
        print(f"  {name}: {'within' if ok else 'OVER'} target")
    return {"sim_start_s": start_s, "sim_job_64_ms": job_ms, "sim_job_512_ms": large_ms}
