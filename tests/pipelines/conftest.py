"""Pipelines end to end in one process: gateway, orchestrator, enhancer and comfy-workers on real
NATS and S3, driving ComfyUI simulators (separate processes) on loopback."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyline.catalogue import Catalogue
from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import JobEvent, JobRecord, ModelTemplate
from comfyline.enhancer import Enhancer
from comfyline.enhancer import Settings as EnhancerSettings
from comfyline.gateway import Settings as GatewaySettings
from comfyline.gateway import create_app
from comfyline.gateway.settings import AuthSettings, LimitSettings
from comfyline.orchestrator import JobStore, Orchestrator
from comfyline.provider import ProviderConfig, ProviderWorker
from comfyline.provider import Settings as ProviderSettings
from comfyline.runtime import Bus, NatsSettings, ObjectStore, S3Settings
from comfyline.testkit.enhancer import running
from comfyline.testkit.orchestrator import quick_settings
from comfyline.worker import Settings as WorkerSettings
from comfyline.worker import Worker

ADMIN_KEY = "cl_admin-bootstrap-key-for-pipeline-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Stack:
    """The services of one test, and a client with a user's key."""

    bus: Bus
    store: ObjectStore
    http: httpx.AsyncClient
    headers: dict[str, str] = field(default_factory=dict)

    async def submit(self, model: str, data: dict[str, Any], **extra: Any) -> httpx.Response:
        body = {"model": model, "input": data, **extra}
        return await self.http.post("/v1/jobs", json=body, headers=self.headers)

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/jobs/{job_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def record(self, job_id: str) -> JobRecord | None:
        found = await JobStore(self.bus).get(job_id)
        return found.record if found else None

    async def wait(
        self,
        job_id: str,
        predicate: Callable[[JobRecord], bool] = lambda r: r.status.terminal,
        timeout_s: float = 90.0,
    ) -> JobRecord:
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = await self.record(job_id)
            if last is not None and predicate(last):
                return last
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{job_id}: {last.model_dump_json(indent=1) if last else 'no record'}")

    async def upload(self, data: bytes, filename: str, content_type: str) -> str:
        files = {"file": (filename, io.BytesIO(data), content_type)}
        response = await self.http.post("/v1/assets", files=files, headers=self.headers)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def events(self, job_id: str) -> list[JobEvent]:
        """Every event of a job on ``JOBS``, in order."""
        names = self.bus.names
        sub = await self.bus.js.subscribe(
            names.job_events_filter(job_id), ordered_consumer=True, stream=names.stream("JOBS")
        )
        found: list[JobEvent] = []
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except TimeoutError:
                    break
                found.append(JobEvent.from_bytes(msg.data))
        finally:
            await sub.unsubscribe()
        return found


def gateway_settings(namespace: str, nats: NatsSettings, s3: S3Settings) -> GatewaySettings:
    return GatewaySettings(
        environment="development",
        namespace=namespace,
        nats=nats,
        s3=s3,
        events_token_secret="events-secret-for-pipeline-tests-0123456789",
        auth=AuthSettings(admin_api_key=ADMIN_KEY),
        limits=LimitSettings(submit_per_min=500, status_per_min=5000, upload_per_min=100),
        status_cache_s=0,
        models_refresh_s=0.5,
    )


def worker_settings(
    namespace: str, nats: NatsSettings, s3: S3Settings, urls: list[str], worker_id: str
) -> WorkerSettings:
    return WorkerSettings(
        namespace=namespace,
        nats=nats,
        s3=s3,
        worker_id=worker_id,
        comfyui_urls=urls,
        ack_wait_s=10.0,
        heartbeat_interval_s=1.0,
        progress_interval_s=0.05,
        health_interval_s=1.0,
        down_retry_s=0.2,
        idle_poll_s=0.3,
        retry_base_s=0.2,
        shutdown_grace_s=3.0,
        log_json=False,
    )


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start simulators (``sims("--step-time", "0.05")``); all stopped at the end."""
    started: list[SimulatorProcess] = []

    def make(*args: str) -> SimulatorProcess:
        sim = SimulatorProcess(tmp_path / f"sim{len(started)}", args=list(args))
        started.append(sim)
        return sim.start()

    yield make
    for sim in started:
        sim.cleanup()


@dataclass
class Services:
    """Starts the in-process services of a test; everything stops at the end."""

    bus: Bus
    store: ObjectStore
    nats: NatsSettings
    s3: S3Settings
    catalogue: Catalogue
    stops: list[Callable[[], Any]] = field(default_factory=list)

    async def workers(self, urls: list[str], worker_id: str = "w1") -> Worker:
        names = self.bus.names
        settings = worker_settings(names.namespace, self.nats, self.s3, urls, worker_id)
        worker = Worker(self.bus, self.store, self.catalogue, settings)
        self._run(worker.run)
        return worker

    def _run(self, run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
        """Run a service's ``run(stop)`` until the test ends."""
        stop = asyncio.Event()
        task = asyncio.create_task(run(stop))

        async def end() -> None:
            stop.set()
            await asyncio.wait_for(task, 30)

        self.stops.append(end)

    async def provider_worker(self, providers: dict[str, ProviderConfig]) -> ProviderWorker:
        settings = ProviderSettings(
            namespace=self.bus.names.namespace,
            nats=self.nats,
            s3=self.s3,
            worker_id="provider-1",
            providers=providers,
            ack_wait_s=10.0,
            heartbeat_interval_s=0.5,
            health_interval_s=0.5,
            fetch_timeout_s=0.2,
            shutdown_grace_s=3.0,
            log_json=False,
        )
        worker = ProviderWorker(self.bus, self.store, self.catalogue, settings)
        self._run(worker.run)
        return worker

    async def orchestrator(self) -> Orchestrator:
        settings = quick_settings(self.nats, self.bus.names.namespace, ack_wait_s=10.0)
        orchestrator = Orchestrator(self.bus, self.catalogue, settings)
        await orchestrator.start()
        self.stops.append(orchestrator.stop)
        return orchestrator


@pytest.fixture
async def services(
    bus: Bus, store: ObjectStore, nats_settings: NatsSettings, s3_settings: S3Settings
) -> AsyncIterator[Services]:
    made = Services(bus, store, nats_settings, s3_settings, Catalogue.builtin())
    enhancer_settings = EnhancerSettings(namespace=bus.names.namespace, nats=nats_settings)
    async with running(Enhancer(bus, made.catalogue, enhancer_settings)):
        try:
            yield made
        finally:
            for stop in reversed(made.stops):
                result = stop()
                if asyncio.iscoroutine(result):
                    await result


@pytest.fixture
async def stack(
    bus: Bus, store: ObjectStore, nats_settings: NatsSettings, s3_settings: S3Settings
) -> AsyncIterator[Stack]:
    """A gateway (in-process ASGI) and a user's key; start the rest with ``services``."""
    app = create_app(gateway_settings(bus.names.namespace, nats_settings, s3_settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as http:
            limits = {"submit_per_min": 500, "status_per_min": 5000, "active_jobs": 50}
            body = {"owner": "alice", "role": "user", "name": "alice-key", "limits": limits}
            made = await http.post("/v1/keys", json=body, headers=ADMIN)
            assert made.status_code == 201, made.text
            headers = {"Authorization": f"Bearer {made.json()['secret']}"}
            yield Stack(bus, store, http, headers)


async def publish_models(bus: Bus, *templates: ModelTemplate) -> None:
    """Put templates in the ``models`` bucket, as a catalogue publisher would."""
    kv = await bus.kv(bus.names.bucket("models"))
    for template in templates:
        await kv.put(template.name, template.model_dump_json().encode())
