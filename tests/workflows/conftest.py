"""Workflow jobs end to end: a gateway, an orchestrator and comfy-workers (each with its live
catalogue, as in production) on real NATS and S3, driving ComfyUI simulators."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from comfyline.catalogue import Catalogue
from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import JobRecord
from comfyline.gateway import Settings as GatewaySettings
from comfyline.gateway import create_app
from comfyline.gateway.settings import AuthSettings, LimitSettings
from comfyline.orchestrator import JobStore, Orchestrator
from comfyline.runtime import Bus, LiveCatalogue, NatsSettings, ObjectStore, S3Settings
from comfyline.runtime.kv import scan
from comfyline.stack import free_port
from comfyline.testkit.orchestrator import quick_settings
from comfyline.worker import Settings as WorkerSettings
from comfyline.worker import Worker

ADMIN_KEY = "cl_admin-bootstrap-key-for-workflow-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
REFRESH_S = 0.5


@dataclass
class Fleet:
    """The services of one test and a client of the gateway."""

    bus: Bus
    store: ObjectStore
    nats: NatsSettings
    s3: S3Settings
    http: httpx.AsyncClient
    url: str
    stops: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)

    async def key(self, owner: str, scopes: list[str] | None = None) -> dict[str, str]:
        body = {"owner": owner, "name": owner, "scopes": scopes or []}
        made = await self.http.post("/v1/keys", json=body, headers=ADMIN)
        assert made.status_code == 201, made.text
        return {"Authorization": f"Bearer {made.json()['secret']}"}

    async def record(self, job_id: str) -> JobRecord | None:
        found = await JobStore(self.bus).get(job_id)
        return found.record if found else None

    async def wait(self, job_id: str, timeout_s: float = 90.0) -> JobRecord:
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = await self.record(job_id)
            if last is not None and last.status.terminal:
                return last
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{job_id}: {last.model_dump_json(indent=1) if last else 'no record'}")

    async def live_catalogue(self) -> LiveCatalogue:
        catalogue = LiveCatalogue(self.bus, Catalogue.builtin(), REFRESH_S)
        await catalogue.start()
        self.stops.append(catalogue.stop)
        return catalogue

    async def worker(self, url: str, worker_id: str) -> Worker:
        settings = WorkerSettings(
            namespace=self.bus.names.namespace,
            nats=self.nats,
            s3=self.s3,
            worker_id=worker_id,
            comfyui_urls=[url],
            ack_wait_s=10.0,
            heartbeat_interval_s=0.5,
            progress_interval_s=0.05,
            health_interval_s=0.5,
            down_retry_s=0.2,
            idle_poll_s=0.3,
            retry_base_s=0.2,
            shutdown_grace_s=3.0,
            log_json=False,
        )
        worker = Worker(self.bus, self.store, await self.live_catalogue(), settings)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))

        async def end() -> None:
            stop.set()
            done, _ = await asyncio.wait({task}, timeout=30)
            if not done:  # a worker stuck in shutdown is not what these tests are about
                task.cancel()
                await asyncio.wait({task}, timeout=5)

        self.stops.append(end)
        return worker

    async def orchestrator(self) -> Orchestrator:
        settings = quick_settings(self.nats, self.bus.names.namespace, ack_wait_s=10.0)
        orchestrator = Orchestrator(self.bus, await self.live_catalogue(), settings)
        await orchestrator.start()
        self.stops.append(orchestrator.stop)
        return orchestrator

    async def servers_known(self, count: int, timeout_s: float = 30.0) -> None:
        """Until ``count`` servers have shared their /object_info in a heartbeat."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            kv = await self.bus.kv(self.bus.names.bucket("workers"))
            shared = 0
            for _, raw in await scan(kv, ">"):
                shared += raw.count(b'"object_info":"fleet/object_info/')
            if shared >= count:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError("the workers never shared their servers' /object_info")


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start simulators (``sims("--disable-node", "ImageBlur")``); all stopped at the end."""
    started: list[SimulatorProcess] = []

    def make(*args: str) -> SimulatorProcess:
        sim = SimulatorProcess(tmp_path / f"sim{len(started)}", args=list(args))
        started.append(sim)
        return sim.start()

    yield make
    for sim in started:
        sim.cleanup()


@pytest.fixture
async def fleet(
    bus: Bus, store: ObjectStore, nats_settings: NatsSettings, s3_settings: S3Settings
) -> AsyncIterator[Fleet]:
    """A gateway (in-process ASGI); start workers and the orchestrator through the fixture."""
    settings = GatewaySettings(
        environment="development",
        namespace=bus.names.namespace,
        nats=nats_settings,
        s3=s3_settings,
        events_token_secret="events-secret-for-workflow-tests-0123456789",
        auth=AuthSettings(admin_api_key=ADMIN_KEY),
        limits=LimitSettings(submit_per_min=500, status_per_min=5000, upload_per_min=100),
        status_cache_s=0,
        models_refresh_s=REFRESH_S,
    )
    # Served by uvicorn on a loopback port: the Comfy SDK is a real HTTP client.
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, lifespan="on", log_level="warning"
        )
    )
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            made = Fleet(bus, store, nats_settings, s3_settings, http, url)
            try:
                yield made
            finally:
                for stop in reversed(made.stops):
                    await stop()
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait({serving}, timeout=10)
        if not done:  # a client's idle keep-alive connection must not hold the test up
            server.force_exit = True
            await asyncio.wait_for(serving, 20)
