"""A second, independent side-by-side measure of what Comfyline adds to a job.

The project's bench (``python -m bench``) starts its own stack and drives it with ``httpx`` and
async code shared with the rest of ``bench/``. This checks its overhead figure another way,
sharing none of that: against a stack that is already running as users run it (``comfyline up``,
read from its ``stack.json``), with a plain blocking client from the standard library
(``http.client``, one kept-alive connection per host) and a hand-written graph on the direct side.
Job by job, alternating which side goes first (ABBA), the same ``cpu-smoke`` work:

- direct: ``POST /prompt`` to the stack's ComfyUI on a WebSocket kept open, wait for its
  ``executing`` end marker, ``GET /view`` of the PNG;
- Comfyline: ``POST /v1/jobs`` with ``Prefer: wait``, then ``GET`` of ``outputs[0].url``;
- with ``--peer``, a third side for reference: the one-server Comfy API v2 proxy
  (``comfy-api-proxy``, started here against the same ComfyUI with its durable state on):
  ``POST /api/v2/jobs``, its event stream until the job's final ``status``, then ``GET`` of the
  output's ``url``: the same web app's path through the proxy ComfyUI's makers publish.

Every downloaded PNG is checked (its size and the colour asked for), so a fast wrong answer
cannot pass. Prints median, p90 and p99 of both sides and of each pair's difference, and writes
them as JSON::

    COMFYLINE_SIM_ARGS='--history-delay 0' uv run comfyline up &   # or COMFYUI_URL=... (real)
    uv run python -m bench.crosscheck [--stack .comfyline/stack.json] [--jobs 200] [--size 512]
                                      [--peer]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
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
        self._streams: dict[str, http.client.HTTPConnection] = {}

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        parts = urllib.parse.urlsplit(url)
        for attempt in (1, 2):  # a kept-alive connection the server closed: open a new one
            conn = self._connection(self._open, parts)
            try:
                conn.request(method, _path(parts), body=body, headers=headers or {})
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop(self._open, parts)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def events(self, url: str, quiet_s: float) -> bytes | None:
        """A Server-Sent Events body read to its end on a connection of its own, or None when
        the server stays silent for ``quiet_s`` (the connection is then dropped)."""
        parts = urllib.parse.urlsplit(url)
        conn = self._connection(self._streams, parts)
        try:
            conn.request("GET", _path(parts), headers={"Accept": "text/event-stream"})
            response = conn.getresponse()
            if response.status != 200:
                raise AssertionError(f"GET {url}: {response.status} {response.read()[:300]!r}")
            if conn.sock is not None:
                conn.sock.settimeout(quiet_s)
            body = response.read()
            if conn.sock is not None:
                conn.sock.settimeout(60)
            return body
        except (TimeoutError, http.client.HTTPException, ConnectionError):
            self._drop(self._streams, parts)
            return None

    @staticmethod
    def _connection(
        pool: dict[str, http.client.HTTPConnection], parts: urllib.parse.SplitResult
    ) -> http.client.HTTPConnection:
        """``pool``'s kept connection to the URL's origin, opened if there is none."""
        origin = f"{parts.scheme}://{parts.netloc}"
        conn = pool.get(origin)
        if conn is None:
            https = parts.scheme == "https"
            kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
            conn = pool[origin] = kind(parts.netloc, timeout=60)
        return conn

    @staticmethod
    def _drop(pool: dict[str, http.client.HTTPConnection], parts: urllib.parse.SplitResult) -> None:
        conn = pool.pop(f"{parts.scheme}://{parts.netloc}", None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for conn in [*self._open.values(), *self._streams.values()]:
            conn.close()


def _path(parts: urllib.parse.SplitResult) -> str:
    return parts.path + (f"?{parts.query}" if parts.query else "")


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
        #: Per job, how long ComfyUI's end marker (``executing {node: null}``) came after its
        #: ``execution_success``: the direct side waits for it in full, where Comfyline's worker
        #: overlaps it with storing the output (see ``end_marker_note``).
        self.marker_gaps_s: list[float] = []

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
        succeeded = None
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
            elif message["type"] == "execution_success":
                succeeded = time.perf_counter()
            elif message["type"] == "execution_error":
                raise AssertionError(data.get("exception_message"))
            elif message["type"] == "executing" and data.get("node") is None:
                if succeeded is not None:
                    self.marker_gaps_s.append(time.perf_counter() - succeeded)
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


def sse_frames(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The ``(event, data)`` frames of a whole Server-Sent Events body (comments skipped)."""
    frames = []
    for block in stream.decode().replace("\r\n", "\n").split("\n\n"):
        event, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            frames.append((event, json.loads("\n".join(data))))
    return frames


class ThroughPeer:
    """The one-server Comfy API v2 proxy's path for a web app: ``POST /api/v2/jobs``, the job's
    event stream until the proxy ends it, then (if the stream did not say the job succeeded)
    ``GET /api/v2/jobs/{id}`` until it does, then ``GET`` of the output's ``url``."""

    def __init__(self, url: str, http: Connections, quiet_s: float = 1.0) -> None:
        self.url = url.rstrip("/")
        self.http = http
        self.quiet_s = quiet_s

    def run(self, size: int, color: int) -> float:
        body = json.dumps({"workflow": graph(size, color)}).encode()
        started = time.perf_counter()
        status, raw = self.http.request(
            "POST", f"{self.url}/api/v2/jobs", body, {"Content-Type": "application/json"}
        )
        if status not in (200, 201):
            raise AssertionError(f"POST /api/v2/jobs: {status} {raw[:300]!r}")
        job_id = json.loads(raw)["id"]
        stream = self.http.events(f"{self.url}/api/v2/jobs/{job_id}/events", self.quiet_s)
        frames = sse_frames(stream or b"")
        final = [data.get("status") for event, data in frames if event == "status"][-1:]
        outputs = [data for event, data in frames if event == "output"]
        # The stream ends at ComfyUI's end of the run, which can come before ComfyUI's history
        # has the run: the job then reads as running, or for a moment as expired (in neither
        # ComfyUI's queue nor its history). And a job that ends before the proxy's own socket to
        # ComfyUI is open leaves the stream silent until its next heartbeat (15 s): after
        # ``quiet_s`` of silence this client stops listening. Either way it then polls the job,
        # straight away (the official SDK polls too, after 0.5 s).
        deadline = time.monotonic() + 60
        while final != ["succeeded"] or not outputs:
            if final and final[0] in ("failed", "canceled"):
                raise AssertionError(f"peer job {job_id}: {final[0]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"peer job {job_id}: still {final} after 60 s")
            status, raw = self.http.request("GET", f"{self.url}/api/v2/jobs/{job_id}")
            job = json.loads(raw) if status == 200 else {}
            final, outputs = [job.get("status")], job.get("outputs") or []
        status, png = self.http.request("GET", outputs[0]["url"])
        took = time.perf_counter() - started
        if status != 200:
            raise AssertionError(f"peer output of {job_id}: {status}")
        png_check(png, size, color)
        return took


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def peer_proxy(comfyui_url: str) -> Iterator[str]:
    """``comfy-api-proxy`` in front of ``comfyui_url`` on a free loopback port, its durable
    state in a temporary folder; its URL. Stopped by its PID."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="crosscheck-peer-") as state:
        command = [sys.executable, "-m", "comfy_api_proxy.cli", "run", "--comfyui", comfyui_url]
        proxy = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), "--state-dir", state],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/api/v2/health", timeout=2) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    if proxy.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError("comfy-api-proxy did not come up") from None
                    time.sleep(0.1)
            yield url
        finally:
            proxy.terminate()
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()


def ms(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "median": round(statistics.median(values) * 1000, 2),
        "p90": round(cuts[89] * 1000, 2),
        "p99": round(cuts[98] * 1000, 2),
    }


@dataclass
class Result:
    size: int
    direct_s: list[float] = field(default_factory=list)
    comfyline_s: list[float] = field(default_factory=list)
    peer_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        pairs = [c - d for c, d in zip(self.comfyline_s, self.direct_s, strict=True)]
        out: dict[str, Any] = {
            "jobs_per_side": len(pairs),
            "size": self.size,
            "direct_ms": ms(self.direct_s),
            "comfyline_ms": ms(self.comfyline_s),
            "paired_difference_ms": ms(pairs),
        }
        if self.peer_s:
            peer = [p - d for p, d in zip(self.peer_s, self.direct_s, strict=True)]
            out["peer_ms"] = ms(self.peer_s)
            out["peer_paired_difference_ms"] = ms(peer)
        return out


#: The order of the sides in each round: every side goes first, second and last equally often.
ORDERS = (
    ("direct", "comfyline", "peer"),
    ("peer", "direct", "comfyline"),
    ("comfyline", "peer", "direct"),
    ("peer", "comfyline", "direct"),
    ("direct", "peer", "comfyline"),
    ("comfyline", "direct", "peer"),
)


def run(
    info: dict[str, Any], jobs: int, size: int, warmup: int = 5, peer: bool = False
) -> dict[str, Any]:
    """``jobs`` rounds (after ``warmup``, not counted) against the stack in ``info``: direct and
    Comfyline in ABBA order, or with ``peer`` the three sides in every order in turn."""
    with contextlib.ExitStack() as opened:
        http = Connections()
        opened.callback(http.close)
        direct = Direct(info["comfyui_url"], http)
        opened.callback(direct.close)
        runners: dict[str, Direct | ThroughComfyline | ThroughPeer] = {
            "direct": direct,
            "comfyline": ThroughComfyline(info["gateway_url"], info["api_key"], http),
        }
        if peer:
            proxy_url = opened.enter_context(peer_proxy(info["comfyui_url"]))
            runners["peer"] = ThroughPeer(proxy_url, http)
        result = Result(size)
        colors = random.Random(7)
        for n in range(warmup + jobs):
            if peer:
                order: tuple[str, ...] = ORDERS[n % len(ORDERS)]
            else:  # ABBA: neither side always goes first
                order = ("direct", "comfyline") if n % 4 in (0, 3) else ("comfyline", "direct")
            took: dict[str, float] = {}
            for side in order:
                color = colors.randrange(0x1000000)  # fresh: ComfyUI caches a repeated graph
                took[side] = runners[side].run(size, color)
            if n >= warmup:
                result.direct_s.append(took["direct"])
                result.comfyline_s.append(took["comfyline"])
                if peer:
                    result.peer_s.append(took["peer"])
        gaps = direct.marker_gaps_s[warmup:] or [0.0]
    return {
        "comfyui_url": info["comfyui_url"],
        **result.summary(),
        "direct_end_marker_gap_ms": round(statistics.median(gaps) * 1000, 2),
    }


def end_marker_note(gap_ms: float) -> str | None:
    """A warning when ComfyUI's end marker lags its ``execution_success`` by more than the real
    ComfyUI's fraction of a millisecond: the bundled simulator's ``/history`` race (5 ms by
    default). The direct side pays that lag in full; Comfyline's worker stores the output
    meanwhile, so the lag flatters Comfyline's figure."""
    if gap_ms <= 2.0:
        return None
    return (
        f"note: ComfyUI's end marker came {gap_ms:.1f} ms after execution_success (the "
        "simulator's /history race): the direct side waits for it in full, Comfyline's worker "
        "stores the output meanwhile, so the overhead reads low. Start the stack as the bench "
        "does: COMFYLINE_SIM_ARGS='--history-delay 0' uv run comfyline up"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stack", type=Path, default=DEFAULT_STACK, help="a running stack's stack.json"
    )
    parser.add_argument("--jobs", type=int, default=200, help="pairs measured")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also measure the one-server Comfy API v2 proxy (comfy-api-proxy) as a third side",
    )
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
        **run(info, args.jobs, args.size, peer=args.peer),
    }
    out["machine"]["load_average_after"] = os.getloadavg()
    kind = "simulator" if info.get("comfyui_is_simulator") else "comfyui"
    args.json = args.json or Path(f"bench/results/crosscheck-{kind}.json")
    names = ["direct_ms", "comfyline_ms", "paired_difference_ms"]
    names += ["peer_ms", "peer_paired_difference_ms"] if args.peer else []
    for name in names:
        row = out[name]
        print(
            f"{name:22s} median {row['median']:7.2f}  p90 {row['p90']:7.2f}  p99 {row['p99']:7.2f}"
        )
    note = end_marker_note(out["direct_end_marker_gap_ms"])
    if note:
        print(note)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
