"""A second, independent side-by-side measure of what Comfyline adds to a job.

The project's bench (``python -m bench``) starts its own stack and drives it with ``httpx`` and
async code shared with the rest of ``bench/``. This checks its overhead figure another way,
sharing none of that: against a stack that is already running as users run it (``comfyline up``,
read from its ``stack.json``), with a plain blocking client from the standard library
(``http.client``, one kept-alive connection per host) and a hand-written graph on the direct side.
Job by job, alternating which side goes first (ABBA), the same ``cpu-smoke`` work:

- direct: ``POST /prompt`` to the stack's ComfyUI on a WebSocket kept open, wait for its
  ``executing`` end marker, ``GET /view`` of the PNG;
- Comfyline: ``POST /v1/jobs`` with ``Prefer: wait``, then ``GET`` of ``outputs[0].url``.

Every downloaded PNG is checked (its size and the colour asked for), so a fast wrong answer
cannot pass. Prints median, p90 and p99 of both sides and of each pair's difference, and writes
them as JSON::

    uv run comfyline up &                      # or with COMFYUI_URL=... for a real ComfyUI
    uv run python -m bench.crosscheck [--stack .comfyline/stack.json] [--jobs 200] [--size 512]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import statistics
import struct
import sys
import time
import urllib.parse
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from .report import machine as machine_of

DEFAULT_STACK = Path(".comfyline/stack.json")


class Connections:
    """One kept-alive ``http.client`` connection per ``scheme://host:port``."""

    def __init__(self) -> None:
        self._open: dict[str, http.client.HTTPConnection] = {}

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        parts = urllib.parse.urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in (1, 2):  # a kept-alive connection the server closed: open a new one
            conn = self._open.get(origin)
            if conn is None:
                kind = (
                    http.client.HTTPSConnection
                    if parts.scheme == "https"
                    else http.client.HTTPConnection
                )
                conn = self._open[origin] = kind(parts.netloc, timeout=60)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                del self._open[origin]
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in self._open.values():
            conn.close()


def png_check(data: bytes, size: int, color: int) -> None:
    """Raise unless ``data`` is a ``size`` x ``size`` PNG whose first pixel is ``color``."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    if (width, height) != (size, size):
        raise AssertionError(f"PNG is {width}x{height}, asked {size}x{size}")
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    # The first pixel of the first row reads the same under every PNG row filter.
    first = zlib.decompressobj().decompress(idat, 4)[1:4]
    if first != color.to_bytes(3, "big"):
        raise AssertionError(f"first pixel #{first.hex()}, asked #{color:06x}")


def graph(size: int, color: int) -> dict[str, Any]:
    """EmptyImage -> SaveImage: the work of Comfyline's ``cpu-smoke`` template."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
        },
        "2": {
            "class_type": "SaveImage",
            # a folder per job, as Comfyline's worker saves (a save lists its folder)
            "inputs": {"images": ["1", 0], "filename_prefix": f"crosscheck/{uuid.uuid4().hex}/x"},
        },
    }


class Direct:
    """A caller of ComfyUI with its socket kept open."""

    def __init__(self, comfyui_url: str, http: Connections) -> None:
        self.url = comfyui_url.rstrip("/")
        self.http = http
        self.client_id = uuid.uuid4().hex
        ws_url = self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        self._open = contextlib.ExitStack()
        self.ws: ClientConnection = self._open.enter_context(connect(ws_url, max_size=None))

    def run(self, size: int, color: int) -> float:
        prompt_id = str(uuid.uuid4())
        body = {"prompt": graph(size, color), "client_id": self.client_id, "prompt_id": prompt_id}
        started = time.perf_counter()
        status, raw = self.http.request(
            "POST",
            f"{self.url}/prompt",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        if status != 200:
            raise AssertionError(f"POST /prompt: {status} {raw[:300]!r}")
        files: list[dict[str, str]] = []
        while True:
            frame = self.ws.recv()
            if isinstance(frame, bytes):
                continue
            message = json.loads(frame)
            data = message.get("data", {})
            if data.get("prompt_id") != prompt_id:
                continue
            if message["type"] == "executed":
                files += data["output"].get("images", [])
            elif message["type"] == "execution_error":
                raise AssertionError(data.get("exception_message"))
            elif message["type"] == "executing" and data.get("node") is None:
                break
        status, png = self.http.request(
            "GET", f"{self.url}/view?{urllib.parse.urlencode(files[0])}"
        )
        took = time.perf_counter() - started
        if status != 200:
            raise AssertionError(f"/view: {status}")
        png_check(png, size, color)
        return took

    def close(self) -> None:
        self._open.close()


class ThroughComfyline:
    """A web app's path: ``POST /v1/jobs`` with ``Prefer: wait``, then the presigned link."""

    def __init__(self, gateway_url: str, api_key: str, http: Connections) -> None:
        self.url = gateway_url.rstrip("/")
        self.key = api_key
        self.http = http

    def run(self, size: int, color: int) -> float:
        body = {"model": "cpu-smoke", "input": {"width": size, "height": size, "color": color}}
        headers = {
            "Authorization": f"Bearer {self.key}",
            "Content-Type": "application/json",
            "Prefer": "wait=30",
        }
        started = time.perf_counter()
        status, raw = self.http.request(
            "POST", f"{self.url}/v1/jobs", json.dumps(body).encode(), headers
        )
        if status != 200:
            raise AssertionError(f"POST /v1/jobs: {status} {raw[:300]!r}")
        job = json.loads(raw)
        status, png = self.http.request("GET", job["outputs"][0]["url"])
        took = time.perf_counter() - started
        if job["status"] != "succeeded" or status != 200:
            raise AssertionError(f"job {job['id']}: {job['status']}, download {status}")
        png_check(png, size, color)
        return took


@dataclass
class Result:
    size: int
    direct_s: list[float] = field(default_factory=list)
    comfyline_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        pairs = [c - d for c, d in zip(self.comfyline_s, self.direct_s, strict=True)]

        def ms(values: list[float]) -> dict[str, float]:
            cuts = statistics.quantiles(values, n=100, method="inclusive")
            return {
                "median": round(statistics.median(values) * 1000, 2),
                "p90": round(cuts[89] * 1000, 2),
                "p99": round(cuts[98] * 1000, 2),
            }

        return {
            "jobs_per_side": len(pairs),
            "size": self.size,
            "direct_ms": ms(self.direct_s),
            "comfyline_ms": ms(self.comfyline_s),
            "paired_difference_ms": ms(pairs),
        }


def run(info: dict[str, Any], jobs: int, size: int, warmup: int = 5) -> dict[str, Any]:
    """``jobs`` pairs (after ``warmup`` of each, not counted) against the stack in ``info``."""
    http = Connections()
    direct = Direct(info["comfyui_url"], http)
    comfyline = ThroughComfyline(info["gateway_url"], info["api_key"], http)
    result = Result(size)
    colors = random.Random(7)
    try:
        for n in range(warmup + jobs):
            first_direct = n % 4 in (0, 3)  # ABBA: neither side always goes first
            pair: dict[str, float] = {}
            for side in ("direct", "comfyline") if first_direct else ("comfyline", "direct"):
                color = colors.randrange(0x1000000)  # fresh: ComfyUI caches a repeated graph
                runner = direct if side == "direct" else comfyline
                pair[side] = runner.run(size, color)
            if n >= warmup:
                result.direct_s.append(pair["direct"])
                result.comfyline_s.append(pair["comfyline"])
    finally:
        direct.close()
        http.close()
    return {"comfyui_url": info["comfyui_url"], **result.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stack", type=Path, default=DEFAULT_STACK, help="a running stack's stack.json"
    )
    parser.add_argument("--jobs", type=int, default=200, help="pairs measured")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write (default: bench/results/crosscheck-{simulator,comfyui}.json)",
    )
    args = parser.parse_args()
    info = json.loads(args.stack.read_text())
    started = datetime.now(UTC)
    machine = machine_of()
    out = {
        "command": " ".join(["uv run python -m bench.crosscheck", *sys.argv[1:]]),
        "date": started.isoformat(timespec="seconds"),
        "machine": machine,
        "comfyui_is_simulator": info.get("comfyui_is_simulator"),
        **run(info, args.jobs, args.size),
    }
    out["machine"]["load_average_after"] = os.getloadavg()
    kind = "simulator" if info.get("comfyui_is_simulator") else "comfyui"
    args.json = args.json or Path(f"bench/results/crosscheck-{kind}.json")
    for name in ("direct_ms", "comfyline_ms", "paired_difference_ms"):
        row = out[name]
        print(
            f"{name:22s} median {row['median']:7.2f}  p90 {row['p90']:7.2f}  p99 {row['p99']:7.2f}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
