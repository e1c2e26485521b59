"""Fuzz the gateway from its own OpenAPI document with schemathesis (slow; run with -m slow).

The gateway runs as ``python -m comfyline.gateway`` (a real process, configured by environment
as in production) against the session's NATS and S3, with stand-ins answering
``orchestrator.cancel.v1`` and ``enhance.v1`` so that a 5xx can only be the gateway's own fault.
schemathesis then runs every phase (examples, coverage, fuzzing, stateful) and must find no
server error, no undocumented status, and no response that breaks the schema.

Streaming routes (``.../events``) are left out: a generated request would hold a stream open
until its timeout. test_events.py covers them.

Needs the ``fuzz`` extra: ``uv sync --all-packages --all-extras``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from comfyline.contracts import (
    CancelReply,
    Enhancement,
    EnhanceReply,
    EnhanceRequest,
    JobState,
    Names,
)
from comfyline.runtime import Bus, NatsSettings, serve
from comfyline.runtime.consume import Delivery
from comfyline.stack import NatsServer, SeaweedS3, free_port
from comfyline.testkit.fixtures import TEST_ACCESS_KEY, TEST_SECRET_KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SCHEMATHESIS = Path(sys.prefix) / "bin" / "schemathesis"
ADMIN_KEY = "cl_fuzz-admin-key-0123456789abcdef0123456789"
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)
LIMITS = (
    "submit_per_min",
    "enhance_per_min",
    "status_per_min",
    "upload_per_min",
    "keys_per_min",
    "active_jobs",
    "max_queue",
)
HIGH = dict.fromkeys(LIMITS, 1e6)


class StandIns(threading.Thread):
    """The orchestrator's cancel and the enhancer, answering in a thread of their own."""

    def __init__(self, url: str, names: Names) -> None:
        super().__init__(daemon=True)
        self.url, self.names = url, names
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self.main())

    async def main(self) -> None:
        self.loop, self.stop_event = asyncio.get_running_loop(), asyncio.Event()
        bus = await Bus.connect(NatsSettings(url=self.url), self.names, "fuzz-stand-ins")

        async def cancel(delivery: Delivery) -> CancelReply:
            return CancelReply(ok=True, status=JobState.CANCELLED)

        async def enhance(delivery: Delivery) -> EnhanceReply:
            request = delivery.parse(EnhanceRequest)
            enhancement = Enhancement(
                original_prompt=request.prompt,
                prompt=request.prompt,
                strategy="none",
                tokenizer="estimate",
                tokens_before=1,
                tokens_after=1,
                budget=75,
                expansion_pct=0.0,
                compressed=False,
            )
            return EnhanceReply(enhancement=enhancement)

        await serve(bus, self.names.cancel_request(), "orchestrator", cancel)
        await serve(bus, self.names.enhance(), "enhancer", enhance)
        self.ready.set()
        await self.stop_event.wait()
        await bus.close()

    def stop(self) -> None:
        if self.loop and self.stop_event:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.join(10)


def test_schemathesis_finds_no_server_error_and_no_schema_break(
    nats_server: NatsServer, s3_server: SeaweedS3, namespace: str, tmp_path: Path
) -> None:
    if not SCHEMATHESIS.exists():
        pytest.skip("schemathesis is not installed: uv sync --all-packages --all-extras")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "GATEWAY_NAMESPACE": namespace,
        "GATEWAY_PORT": str(port),
        "GATEWAY_NATS__URL": nats_server.url,
        "GATEWAY_S3__ENDPOINT": s3_server.endpoint,
        "GATEWAY_S3__ACCESS_KEY": TEST_ACCESS_KEY,
        "GATEWAY_S3__SECRET_KEY": TEST_SECRET_KEY,
        "GATEWAY_S3__BUCKET": f"cl-{namespace}",
        "GATEWAY_AUTH__ADMIN_API_KEY": ADMIN_KEY,
        "GATEWAY_PREFER_WAIT_MAX_S": "1",
        "GATEWAY_OPENAI__WAIT_S": "1",
        "GATEWAY_REQUEST_TIMEOUT_S": "2",
        "GATEWAY_ENHANCE_TIMEOUT_S": "2",
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "gateway.log"
    stand_ins = StandIns(nats_server.url, Names(namespace))
    stand_ins.start()
    assert stand_ins.ready.wait(20)
    with log.open("wb") as out:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "comfyline.gateway"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert gateway.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.1)
        created = httpx.post(
            f"{base}/v1/keys",
            json={"owner": "fuzzer", "limits": HIGH},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert created.status_code == 201, created.text
        # The OpenAI-compatible routes wait for their job (GATEWAY_OPENAI__WAIT_S) and answer
        # their documented 504 `timeout` when it has not finished; this stack runs no job, so
        # that answer is the expected one there, and every other 5xx still fails the run.
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            "[[operations]]\n"
            'include-path-regex = "^/v1/(images/(generations|edits)|audio/speech)$"\n'
            'checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "504"]\n'
        )
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "--config-file",
                str(config),
                "run",
                f"{base}/openapi.json",
                "--header",
                f"Authorization: Bearer {created.json()['secret']}",
                "--checks",
                CHECKS,
                "--exclude-path-regex",
                ".*/events$",
                "--max-examples",
                "25",
                "--request-timeout",
                "15",
                "--workers",
                "2",
                "--seed",
                "20261123",
                "--no-color",
                "--report-dir",
                str(tmp_path / "report"),
            ],
            capture_output=True,
            text=True,
            timeout=800,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
        assert "Selected: 40/42" in run.stdout  # every operation but the two event streams
    finally:
        gateway.terminate()
        gateway.wait(30)
        stand_ins.stop()
