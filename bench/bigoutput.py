"""(e) the worker's peak resident memory while it moves one big output to S3.

A model published for the bench (EmptyImage -> SaveImage, up to 16384 px a side) runs on a
simulator that saves PNGs uncompressed, so a WxH image is a file of about 3*W*H bytes; the
worker streams it from ``/view`` to S3. The worker's peak RSS (``VmHWM``, reset just before
the job) is compared with its RSS before the job.
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

from .clients import api_client, submit, wait_job
from .stack import BenchStack, reset_peak_rss, rss_bytes

MODEL = "bench-big-output"
MAX_SIDE = 16384


def _model() -> dict[str, Any]:
    side = {"type": "integer", "minimum": 16, "maximum": MAX_SIDE, "default": 64}
    return {
        "name": MODEL,
        "title": "Bench: one big uncompressed PNG",
        "kind": "image",
        "workflow": {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
            },
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "bench/big"},
            },
        },
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"width": side, "height": side},
        },
        "bindings": [
            {"param": "width", "node": "1", "input": "width"},
            {"param": "height", "node": "1", "input": "height"},
        ],
    }


async def _run(info: dict[str, Any], side: int) -> dict[str, Any]:
    async with api_client(info) as api:
        for _ in range(300):  # the gateway hears of the new worker's server within seconds
            reply = await api.post("/v1/models", json=_model())
            if reply.status_code != 503:
                break
            await asyncio.sleep(0.2)
        if reply.status_code not in (201, 409):
            raise RuntimeError(f"publishing {MODEL}: {reply.status_code} {reply.text}")
        job = await wait_job(api, await submit(api, MODEL, {"width": side, "height": side}, True))
        return job


def run(stack: BenchStack, big_sim_url: str, output_mb: float) -> dict[str, Any]:
    stack.set_workers([[big_sim_url]])
    pid = stack.workers[0].pid
    side = math.ceil(math.sqrt(output_mb * 1e6 / 3))
    before = rss_bytes(pid)
    reset_peak_rss(pid)
    sampled = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            sampled.append(rss_bytes(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        job = asyncio.run(_run(stack.info, side))
    finally:
        stop.set()
        sampler.join()
    peak = max(rss_bytes(pid, "VmHWM"), *sampled)
    size = sum(int(o.get("size") or 0) for o in job["outputs"])
    return {
        "image": f"{side}x{side}",
        "output_mb": size / 1e6 if size else 3 * side * side / 1e6,
        "output_size_from": "job record" if size else "3 bytes per pixel",
        "rss_before_mb": before / 2**20,
        "rss_peak_mb": peak / 2**20,
        "rss_growth_mb": (peak - before) / 2**20,
    }
