"""The walking skeleton, as a user meets it: ``comfyline up``, one job over HTTP, SSE, a PNG.

The stack runs as separate processes (nats-server, weed, the ComfyUI simulator, four services),
exactly as the README's first command starts it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from .conftest import Stack
from .otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.e2e
TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is as good as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def sse_events(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Parse a Server-Sent Events stream into dicts with ``id``, ``event``, ``data``."""
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in event or "event" in event:
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[field] = (
                event[field] + "\n" + value if field == "data" and field in event else value
            )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_one_job_end_to_end_and_it_survives_a_restart(stack: Stack) -> None:
    info = stack.up()
    base, key = info["gateway_url"], info["api_key"]
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        created = client.post(
            "/v1/jobs", json={"model": "cpu-smoke", "input": {"width": 192, "height": 128}}
        )
        assert created.status_code == 202, created.text
        job = created.json()
        job_id = job["id"]
        assert job["status"] == "queued"
        assert {"self", "events", "cancel"} <= set(job["links"])

        # Follow the events link as a browser would: no Authorization header.
        kinds: list[str] = []
        seen_ids: list[int] = []
        events_url = httpx.URL(base).join(job["links"]["events"])
        with httpx.stream("GET", events_url, timeout=60) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in sse_events(response):
                kinds.append(event["event"])
                seen_ids.append(int(event["id"]))
                if event["event"] in TERMINAL:
                    final = json.loads(event["data"])
                    break
        assert kinds[0] == "queued"
        assert kinds[-1] == "completed", kinds
        assert "started" in kinds
        assert seen_ids == sorted(seen_ids) and len(set(seen_ids)) == len(seen_ids)
        final_outputs = final.get("outputs") or final.get("job", {}).get("outputs")
        assert final_outputs and final_outputs[0]["url"].startswith("http")

        fetched = client.get(f"/v1/jobs/{job_id}")
        assert fetched.status_code == 200
        done = fetched.json()
        assert done["status"] == "succeeded"
        output = done["outputs"][0]
        assert output["content_type"] == "image/png"
        assert (output["width"], output["height"]) == (192, 128)

        # The presigned link works without any credentials.
        png = httpx.get(output["url"], timeout=30)
        assert png.status_code == 200
        assert png_size(png.content) == (192, 128)
        assert len(png.content) == output["size"]

        # A crashed part is started again, and says so in stack.json; jobs keep running.
        worker_pid = stack.info["pids"]["worker"]
        os.kill(worker_pid, signal.SIGKILL)
        stack_json = stack.state_dir / "stack.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = json.loads(stack_json.read_text())
            if now.get("restarts", {}).get("worker") == 1:
                break
            time.sleep(0.2)
        assert now.get("restarts") == {"worker": 1}, stack.log_tail()
        assert now["pids"]["worker"] != worker_pid and pid_alive(now["pids"]["worker"])
        assert stack_json.stat().st_mode & 0o777 == 0o600
        stack.info = now
        body = {"model": "cpu-smoke", "input": {"width": 32, "height": 32}}
        after = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"}).json()
        while after["status"] not in ("succeeded", "failed", "cancelled", "timed_out"):
            time.sleep(0.3)
            after = client.get(f"/v1/jobs/{after['id']}").json()
        assert after["status"] == "succeeded", after

    pids = list(stack.info["pids"].values())
    # `comfyline down` (from another shell) stops the running `up` and every child.
    down = subprocess.run(
        [sys.executable, "-m", "comfyline.stack", "down", "--state-dir", str(stack.state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    assert stack.process is not None and stack.process.wait(timeout=90) == 0
    assert not [pid for pid in pids if pid_alive(pid)], "children left running after stop"
    assert not (stack.state_dir / "stack.json").exists()

    # A second `up` on the same state folder finds the finished job.
    info = stack.up()
    assert info["api_key"] == key
    with httpx.Client(base_url=info["gateway_url"], headers=auth, timeout=30) as client:
        again = client.get(f"/v1/jobs/{job_id}")
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "succeeded"
        again_output = again.json()["outputs"][0]
        assert httpx.URL(again_output["url"]).path == httpx.URL(output["url"]).path
        assert again_output["size"] == output["size"]
        png = httpx.get(again.json()["outputs"][0]["url"], timeout=30)
        assert png_size(png.content) == (192, 128)


def test_one_trace_runs_from_the_http_request_through_every_service(stack: Stack) -> None:
    with OtlpReceiver() as receiver:
        stack.env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        info = stack.up()
        auth = {"Authorization": f"Bearer {info['api_key']}"}
        with httpx.Client(base_url=info["gateway_url"], headers=auth, timeout=30) as client:
            created = client.post(
                "/v1/jobs",
                json={
                    "model": "txt2img-sdxl",
                    "input": {
                        "prompt": "a red fox in snow",
                        "width": 64,
                        "height": 64,
                        "steps": 2,
                        "seed": 7,
                    },
                },
            )
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status = client.get(f"/v1/jobs/{job_id}").json()["status"]
                if status in {"succeeded", "failed", "cancelled", "timed_out"}:
                    break
                time.sleep(0.2)
            assert status == "succeeded"

            # The gateway's preview and the orchestrator's call reach the same enhancer: the
            # same prompt for the same model gives the same result (the rules are deterministic).
            job = client.get(f"/v1/jobs/{job_id}").json()
            preview = client.post(
                "/v1/prompts/enhance",
                json={
                    "model": "txt2img-sdxl",
                    "prompt": "a red fox in snow",
                    "negative_prompt": job["input"]["negative_prompt"],
                    "quality": job["input"]["preset"],
                },
            )
            assert preview.status_code == 200, preview.text
            previewed = preview.json()["enhancement"]
            applied = job["enhancement"]
            assert applied["original_prompt"] == "a red fox in snow"
            assert applied["prompt"] == previewed["prompt"] != "a red fox in snow"
            assert applied["tokens_after"] == previewed["tokens_after"] <= applied["budget"] == 75

        wanted = {
            "comfyline-gateway",
            "comfyline-orchestrator",
            "comfyline-enhancer",
            "comfyline-worker",
        }

        def stored(span: Any) -> bool:  # the output's way to S3 (the archiver's copy)
            return "s3" in span.name.lower() or "upload" in span.name.lower()

        # Each service exports in its own batches, and a span leaves only once it ends: the
        # archiver's S3 write may arrive a batch before the "archive output" span around it.
        archived = ("comfyline-worker", "archive output")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            by_trace: dict[str, set[str]] = {}
            for span in list(receiver.spans):
                by_trace.setdefault(span.trace_id, set()).add(span.service)
                if stored(span):
                    by_trace[span.trace_id].add("s3")
                if (span.service, span.name) == archived:
                    by_trace[span.trace_id].add("archived")
            job_traces = [tid for tid, s in by_trace.items() if wanted | {"s3", "archived"} <= s]
            if job_traces:
                break
            time.sleep(0.3)
        assert job_traces, {tid: sorted(s) for tid, s in by_trace.items()}
        trace_spans = [s for s in receiver.spans if s.trace_id == job_traces[0]]
        roots = [s for s in trace_spans if not s.parent_span_id]
        assert len(roots) == 1 and roots[0].service == "comfyline-gateway", roots
        names = {(s.service, s.name) for s in trace_spans}
        assert ("comfyline-worker", "publish outputs") in names, names
        assert archived in names, names
        # Stopped while its traces still have somewhere to go: with the receiver gone, each
        # service's last export waits out its timeout on the way down.
        stack.down()


@pytest.mark.real_comfyui
def test_cpu_smoke_through_the_local_stack_on_a_real_comfyui(
    stack: Stack, real_comfyui: str
) -> None:
    stack.env["COMFYUI_URL"] = real_comfyui
    info = stack.up()
    assert info["comfyui_url"] == real_comfyui and info["comfyui_is_simulator"] is False
    auth = {"Authorization": f"Bearer {info['api_key']}", "Prefer": "wait=60"}
    with httpx.Client(base_url=info["gateway_url"], headers=auth, timeout=90) as client:
        color = 0x2A7F3C
        body = {"model": "cpu-smoke", "input": {"width": 96, "height": 40, "color": color}}
        done = client.post("/v1/jobs", json=body)
        assert done.status_code in (200, 201, 202), done.text
        job = done.json()
        deadline = time.monotonic() + 90
        while job["status"] not in ("succeeded", "failed", "cancelled", "timed_out"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
            job = client.get(f"/v1/jobs/{job['id']}").json()
        assert job["status"] == "succeeded", job
        output = job["outputs"][0]
        assert (output["width"], output["height"]) == (96, 40)
        png = httpx.get(output["url"], timeout=30)
        assert png.status_code == 200 and png_size(png.content) == (96, 40)
        pixel = Image.open(io.BytesIO(png.content)).convert("RGB").getpixel((5, 5))
        assert pixel == (0x2A, 0x7F, 0x3C)
