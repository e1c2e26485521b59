"""The Python client and the ``comfyline`` command line against a stack started by ``comfyline up``.

One stack for the module (the simulator takes 0.05 s per sampling step, so jobs report progress).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyline.client import AsyncClient, Client, ComfylineError, Retry
from comfyline.stack import free_port

from .conftest import Stack, running_stack

pytestmark = pytest.mark.e2e
PNG = b"\x89PNG\r\n\x1a\n"
SLOW_JOB = {"prompt": "a lighthouse at dusk", "steps": 20, "width": 256, "height": 256}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("client"), ["--sim-step-time", "0.05"]) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack=stack.state_dir / "stack.json") as made:
        yield made


class CuttingProxy:
    """A TCP proxy to the gateway that drops the first event stream after ``cut_after`` bytes
    of its answer, as a flaky network would; every other connection passes untouched."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(downstream,), daemon=True).start()

    def _serve(self, downstream: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        # The client keeps connections alive: any request on this one may be the stream.
        marks: list[int] = []
        sent = 0

        def requests() -> None:
            try:
                while chunk := downstream.recv(65536):
                    if b"/events " in chunk and self.cuts == 0 and not marks:
                        marks.append(sent)
                        self.cuts += 1
                    upstream.sendall(chunk)
            except OSError:
                pass

        threading.Thread(target=requests, daemon=True).start()
        try:
            while chunk := upstream.recv(4096):
                if marks and sent + len(chunk) >= marks[0] + self.cut_after:
                    downstream.sendall(chunk[: marks[0] + self.cut_after - sent])
                    break
                downstream.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            # shutdown() first: a plain close() while the other thread is still blocked reading
            # the socket sends no FIN, and the client would only notice at its read timeout.
            for sock in (downstream, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.listener.close()


def test_a_job_runs_to_the_end_and_its_output_is_saved(client: Client, tmp_path: Path) -> None:
    seen: list[float] = []
    job = client.run(
        "txt2img-sdxl",
        SLOW_JOB,
        enhance=False,
        on_event=lambda e: seen.append(float((e.progress or {}).get("percent") or 0)),
    )
    assert job.succeeded and job.outputs[0].kind == "image"
    assert any(0 < p < 100 for p in seen), f"no progress between 0 and 100: {seen}"
    assert seen == sorted(seen), "progress went backwards"
    [path] = client.download(job, tmp_path)
    assert path.read_bytes().startswith(PNG)
    assert job.id in {j.id for j in client.jobs(model="txt2img-sdxl")}


def test_a_stream_cut_mid_job_is_resumed_without_losing_an_event(stack: Stack) -> None:
    proxy = CuttingProxy(stack.port, cut_after=1500)
    try:
        retries: list[str] = []
        with Client(
            proxy.url, stack.info["api_key"], retry=Retry(on_retry=lambda *a: retries.append(a[2]))
        ) as flaky:
            job = flaky.submit("txt2img-sdxl", SLOW_JOB, enhance=False)
            followed = [e.seq for e in flaky.events(job.id)]
    finally:
        proxy.close()
    assert proxy.cuts == 1 and retries, "the stream was never cut"
    assert not any("Timeout" in reason for reason in retries), retries  # seen as cut at once
    with Client(stack=stack.state_dir / "stack.json") as direct:
        everything = [e.seq for e in direct.events(job.id)]
        assert direct.get(job.id).status == "succeeded"
    assert followed == everything, "events lost or repeated across the reconnect"
    assert len(everything) > 5


def test_a_429_is_retried_after_its_retry_after(client: Client, stack: Stack) -> None:
    made = client.create_key("one-at-a-time", limits={"active_jobs": 1})
    waits: list[tuple[int, float, str]] = []
    with Client(
        stack.info["gateway_url"],
        made["secret"],
        retry=Retry(attempts=8, on_retry=lambda *a: waits.append(a)),
    ) as limited:
        first = limited.submit("txt2img-sdxl", SLOW_JOB, enhance=False)
        second = limited.submit("cpu-smoke", {"width": 64, "height": 64})
        assert second.id != first.id
        assert limited.wait(second.id).succeeded
        assert limited.get(first.id).done
    assert waits, "the second job was accepted at once: the active-jobs cap did not apply"
    assert {reason for *_, reason in waits} == {"429"}
    assert all(delay == 5 for _, delay, _ in waits), f"Retry-After not honoured: {waits}"


def test_the_servers_error_code_reaches_the_caller(client: Client) -> None:
    with pytest.raises(ComfylineError) as raised:
        client.submit("no-such-model", {})
    assert raised.value.status == 422
    assert raised.value.code == "unknown_model"
    assert raised.value.request_id


def test_the_async_client_uploads_runs_and_downloads(stack: Stack, tmp_path: Path) -> None:
    async def scenario() -> tuple[Any, list[Path], list[str]]:
        async with AsyncClient(stack=stack.state_dir / "stack.json") as api:
            picture = (
                await api.run("cpu-smoke", {"width": 96, "height": 64}, response_format="url")
            ).outputs[0]
            asset = await api.upload(
                (await api.request("GET", picture.content_url)).content, "smoke.png"
            )
            job = await api.run("cpu-smoke", {"width": 64, "height": 32})
            saved = await api.download(job, tmp_path)
            return asset, saved, [a.id for a in await api.assets("upload")]

    asset, saved, uploads = asyncio.run(scenario())
    assert asset.id in uploads
    assert saved[0].read_bytes().startswith(PNG)


def comfyline(stack: Stack, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYLINE_")}
    env |= {"COMFYLINE_STACK": str(stack.state_dir / "stack.json"), "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "comfyline.stack", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_the_cli_runs_a_model_with_a_progress_bar_and_saves_its_output(
    stack: Stack, tmp_path: Path
) -> None:
    done = comfyline(
        stack,
        "run",
        "txt2img-sdxl",
        *("-p", "prompt=a red kite", "-p", "steps=20", "-p", "width=256", "-p", "height=256"),
        *("--out", "out"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    [saved] = done.stdout.split()
    assert (tmp_path / saved).read_bytes().startswith(PNG)
    assert "100.0%" in done.stderr and "succeeded" in done.stderr
    listed = comfyline(stack, "jobs", "ls", "--model", "txt2img-sdxl", cwd=tmp_path)
    assert listed.returncode == 0 and Path(saved).name.split("_")[0] in listed.stdout


def test_the_cli_uploads_a_file_input(stack: Stack, tmp_path: Path) -> None:
    first = comfyline(stack, "run", "cpu-smoke", "-p", "width=80", "--out", ".", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    picture = tmp_path / first.stdout.split()[0]
    uploaded = comfyline(stack, "assets", "upload", str(picture), cwd=tmp_path)
    assert uploaded.returncode == 0, uploaded.stderr
    listed = comfyline(stack, "--json", "assets", "ls", "--source", "upload", cwd=tmp_path)
    assert uploaded.stdout.strip() in listed.stdout


def test_the_cli_exit_codes(stack: Stack, tmp_path: Path) -> None:
    """0 done, 1 job not succeeded, 2 bad command line, 3 refused, 4 unreachable."""
    refused = comfyline(stack, "run", "no-such-model", cwd=tmp_path)
    assert refused.returncode == 3 and "unknown_model" in refused.stderr
    bad = comfyline(stack, "run", "cpu-smoke", "-p", "width", cwd=tmp_path)
    assert bad.returncode == 2
    nowhere = comfyline(stack, "--url", f"http://127.0.0.1:{free_port()}", "status", cwd=tmp_path)
    assert nowhere.returncode == 4 and "cannot reach" in nowhere.stderr
    with Client(stack=stack.state_dir / "stack.json") as api:  # at once: the job is 5 s long
        job_id = api.submit("txt2img-sdxl", SLOW_JOB | {"steps": 100}, enhance=False).id
        assert api.cancel(job_id).id == job_id
    watched = comfyline(stack, "jobs", "watch", job_id, cwd=tmp_path)
    assert watched.returncode == 1 and "cancelled" in watched.stderr


def test_the_local_stack_lets_local_pages_call_the_api(stack: Stack) -> None:
    import httpx

    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{stack.info['gateway_url']}/v1/jobs",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
            },
        )

    local = preflight("http://localhost:5173")
    assert local.status_code == 200
    assert local.headers["access-control-allow-origin"] == "http://localhost:5173"
    foreign = preflight("https://elsewhere.example")
    assert "access-control-allow-origin" not in foreign.headers
    assert "localhost" in stack.log_tail()  # `up` says which origins it allows
