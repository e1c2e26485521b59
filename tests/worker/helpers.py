"""Helpers for the worker's cross-service tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import asyncio
import io
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import av
import httpx
import numpy as np
from nats.js.api import DeliverPolicy
from PIL import Image

from comfyline.catalogue import Catalogue, validate_input
from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import (
    JobRecord,
    JobState,
    OutputRef,
    RunEvent,
    RunJob,
    new_asset_id,
    new_job_id,
    utcnow,
)
from comfyline.runtime import Bus, NatsSettings, ObjectStore, S3Settings
from comfyline.testkit.worker import start_order
from comfyline.worker import Settings, Worker

OWNER = "user-1"


@dataclass
class RunningWorker:
    """A worker running in this process, and how to stop it."""

    worker: Worker
    stop_event: asyncio.Event
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(asyncio.shield(self.task), 30)


Workers = Callable[..., RunningWorker]
SimFactory = Callable[..., SimulatorProcess]


def worker_settings(
    nats_settings: NatsSettings,
    s3_settings: S3Settings,
    namespace: str,
    urls: list[str],
    **overrides: Any,
) -> Settings:
    """Worker settings for a test: fast health checks, short waits."""
    values: dict[str, Any] = {
        "namespace": namespace,
        "nats": nats_settings,
        "s3": s3_settings,
        "comfyui_urls": urls,
        "ack_wait_s": 10.0,
        "heartbeat_interval_s": 1.0,
        "progress_interval_s": 0.05,
        "health_interval_s": 1.0,
        "down_retry_s": 0.2,
        "idle_poll_s": 0.3,
        "retry_base_s": 0.2,
        "shutdown_grace_s": 5.0,
        "log_json": False,
    }
    values.update(overrides)
    return Settings(**values)


def start_worker(
    bus: Bus,
    store: ObjectStore,
    nats_settings: NatsSettings,
    s3_settings: S3Settings,
    urls: list[str],
    catalogue: Catalogue | None = None,
    **overrides: Any,
) -> RunningWorker:
    """A worker sharing the test's bus and store, running until stopped."""
    settings = worker_settings(nats_settings, s3_settings, bus.names.namespace, urls, **overrides)
    worker = Worker(bus, store, catalogue or Catalogue.builtin(), settings)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    return RunningWorker(worker, stop, task)


def make_job(
    model: str,
    data: dict[str, Any],
    *,
    owner: str = OWNER,
    job_id: str | None = None,
    **fields: Any,
) -> RunJob:
    """A job's work as the orchestrator sends it (outputs under ``outputs/<owner>/<id>/``)."""
    job_id = job_id or new_job_id()
    values: dict[str, Any] = {"template_version": 1} | fields
    return RunJob(
        job_id=job_id,
        owner=owner,
        model=model,
        input=data,
        output_prefix=f"outputs/{owner}/{job_id}/",
        **values,
    )


async def publish_job(
    bus: Bus,
    model: str,
    data: dict[str, Any],
    *,
    owner: str = OWNER,
    job_id: str | None = None,
    record: bool = False,
    version: int = 1,
    validate: bool = True,
    lane: str = "interactive",
) -> RunJob:
    """Dispatch a job as the gateway and orchestrator would (validated; record optional)."""
    if validate:
        data = validate_input(Catalogue.builtin().get(model), data)
    run_job = make_job(model, data, owner=owner, job_id=job_id, template_version=version)
    if record:
        await put_record(bus, run_job, JobState.DISPATCHED)
    await bus.publish(bus.names.work(model, lane), run_job, msg_id=f"{run_job.job_id}:run")
    return run_job


async def put_record(
    bus: Bus,
    run_job: RunJob,
    status: JobState,
    outputs: list[OutputRef] | None = None,
    cancel_requested: bool = False,
) -> None:
    """Write a job record as the orchestrator would."""
    now = utcnow()
    record = JobRecord(
        id=run_job.job_id,
        owner=run_job.owner,
        model=run_job.model,
        template_version=run_job.template_version,
        status=status,
        created_at=now,
        updated_at=now,
        input=run_job.input,
        outputs=outputs or [],
        cancel_requested=cancel_requested,
    )
    kv = await bus.kv(bus.names.bucket("jobs"))
    await kv.put(run_job.job_id, record.to_bytes())


@dataclass
class RunWatch:
    """Collects every RunEvent of the namespace (an ordered consumer on RUNS)."""

    bus: Bus
    events: list[tuple[float, RunEvent]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        async def on_msg(msg: Any) -> None:
            self.events.append((time.monotonic(), RunEvent.from_bytes(msg.data)))
            self._changed.set()

        self._sub = await self.bus.js.subscribe(
            self.bus.names.all_run_events(),
            cb=on_msg,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )

    async def stop(self) -> None:
        await self._sub.unsubscribe()

    def of(self, job_id: str, kind: str | None = None) -> list[RunEvent]:
        return [
            e for _, e in self.events if e.job_id == job_id and (kind is None or e.kind == kind)
        ]

    def starts(self, job_id: str) -> dict[int, datetime]:
        """When each attempt of a job started, as its worker reported it: on its ``started``,
        or on its ``completed`` when the run ended within the worker's started delay."""
        return {
            e.attempt: e.started_at
            for e in start_order(e for _, e in self.events if e.job_id == job_id)
            if e.started_at is not None
        }

    async def wait_for(self, job_id: str, *kinds: str, timeout: float = 30.0) -> RunEvent:  # noqa: ASYNC109
        """The first event of ``job_id`` whose kind is one of ``kinds``."""
        deadline = time.monotonic() + timeout
        while True:
            for _, event in self.events:
                if event.job_id == job_id and event.kind in kinds:
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [(e.kind, e.error) for e in self.of(job_id)]
                raise AssertionError(f"no {kinds} for {job_id} in {timeout}s; saw {seen}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    def times(self, job_id: str) -> dict[str, float]:
        """When each kind of event of a job first arrived (monotonic)."""
        seen: dict[str, float] = {}
        for at, event in self.events:
            if event.job_id == job_id:
                seen.setdefault(event.kind, at)
        return seen

    def start_order(self) -> list[RunEvent]:
        """Every event that tells an attempt's start (see :meth:`starts`), in order of start."""
        return start_order(e for _, e in self.events)

    def by_server(self) -> dict[str, list[str]]:
        """The jobs each server started, in order of start."""
        found: dict[str, list[str]] = defaultdict(list)
        for event in self.start_order():
            if event.server:
                found[event.server].append(event.job_id)
        return found


# --- test media -------------------------------------------------------------------------------
def png_bytes(
    width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 120, 40)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def mask_bytes(width: int = 64, height: int = 64) -> bytes:
    image = Image.new("RGB", (width, height), (0, 0, 0))
    image.paste((255, 255, 255), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def flac_bytes(seconds: float = 2.0, rate: int = 24000) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        t = np.arange(int(seconds * rate)) / rate
        wave = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(wave, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def mp4_bytes(seconds: float = 1.0, fps: int = 25, size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            pixels = np.full((size[1], size[0], 3), (i * 7) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


async def upload_asset(
    store: ObjectStore, data: bytes, ext: str, content_type: str, owner: str = OWNER
) -> str:
    """Store an upload as the gateway would: ``inputs/<owner>/<asset_id>.<ext>``."""
    asset_id = new_asset_id()
    await store.put_bytes(f"inputs/{owner}/{asset_id}.{ext}", data, content_type)
    return asset_id


def probe_media(data: bytes) -> dict[str, Any]:
    """What a real decoder says about a file: its streams and duration."""
    container: Any
    with av.open(io.BytesIO(data)) as container:
        kinds = sorted({s.type for s in container.streams})
        duration = float(container.duration / av.time_base) if container.duration else None
        video = next(iter(container.streams.video), None)
        frames = len(list(container.decode(video=0))) if video is not None else 0
        return {
            "streams": kinds,
            "duration": duration,
            "frames": frames,
            "size": (video.width, video.height) if video is not None else None,
        }


class WorkerProcess:
    """``python -m comfyline.worker`` as a child process, configured only by its environment."""

    def __init__(
        self,
        log_path: Any,
        nats_settings: NatsSettings,
        s3_settings: S3Settings,
        namespace: str,
        urls: list[str],
        **env: Any,
    ) -> None:
        import os
        import sys

        self.log_path = log_path
        self.env = {
            **os.environ,
            "WORKER_NAMESPACE": namespace,
            "WORKER_NATS__URL": nats_settings.url,
            "WORKER_S3__ENDPOINT": s3_settings.endpoint,
            "WORKER_S3__ACCESS_KEY": s3_settings.access_key,
            "WORKER_S3__SECRET_KEY": s3_settings.secret_key,
            "WORKER_S3__BUCKET": s3_settings.bucket,
            "WORKER_COMFYUI_URLS": ",".join(urls),
            "WORKER_HEALTH_INTERVAL_S": "1",
            "WORKER_DOWN_RETRY_S": "0.2",
            "WORKER_IDLE_POLL_S": "0.3",
            "WORKER_HEARTBEAT_INTERVAL_S": "1",
            "WORKER_LOG_JSON": "false",
            **{f"WORKER_{k.upper()}": str(v) for k, v in env.items()},
        }
        self.args = [sys.executable, "-m", "comfyline.worker"]
        self.process: Any = None

    def start(self) -> WorkerProcess:
        import subprocess

        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def signal(self, signum: int) -> None:
        import os

        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    async def wait(self, limit_s: float = 30) -> int:
        deadline = time.monotonic() + limit_s
        while self.process.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()
        return int(self.process.returncode)

    def peak_rss_kb(self) -> int:
        """The child's peak resident memory so far (VmHWM)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def log_tail(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return "".join(log.readlines()[-40:])


async def heartbeats(bus: Bus) -> dict[str, Any]:
    """The workers KV bucket: worker id -> WorkerHeartbeat (read with one ordered consumer)."""
    from comfyline.contracts import WorkerHeartbeat
    from comfyline.runtime import scan

    kv = await bus.kv(bus.names.bucket("workers"))
    return {key: WorkerHeartbeat.from_bytes(value) for key, value in await scan(kv, ">")}


async def queue_ids(client: httpx.AsyncClient, url: str) -> tuple[set[str], set[str]]:
    """The prompt ids a ComfyUI is running and has pending."""
    data = (await client.get(f"{url}/queue")).json()
    return ({e[1] for e in data["queue_running"]}, {e[1] for e in data["queue_pending"]})
