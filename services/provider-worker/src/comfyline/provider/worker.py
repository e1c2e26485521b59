"""The provider worker: catalogue models run by hosted APIs, on the same contract as ComfyUI.

It joins the fleet exactly as ``docs/contract`` says a worker does, and nothing else knows it is
not a ComfyUI worker:

- binds the durable ``work-<model>`` consumer on ``WORK`` for each model whose provider is
  configured, and takes up to ``concurrency`` jobs at a time per provider;
- writes its ``workers`` entry (one "server" per provider, ``provider`` set, ``healthy`` while
  the provider answers and has not asked us to wait), so ``/v1/status`` and ``/v1/models`` show
  the provider's availability and the orchestrator dispatches only while it is live;
- reports ``started``, ``progress``, ``completed`` (with ``OutputRef``s stored under
  ``RunJob.output_prefix``) or ``failed`` (a stable code, ``final``) on ``runs.<job_id>.<kind>``;
- stops a job on ``control.cancel.<job_id>`` (the queue API's request is cancelled too) and
  reports ``cancelled``; skips a job whose record says it was cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import KeyNotFoundError

from comfyline.catalogue import Catalogue
from comfyline.contracts import (
    LANES,
    CancelCommand,
    ComfylineError,
    ErrorCode,
    JobError,
    JobRecord,
    OutputKind,
    OutputRef,
    Progress,
    RunEvent,
    RunEventKind,
    RunJob,
    ServerStatus,
    WorkerHeartbeat,
    bucket_spec,
    stream_spec,
    utcnow,
)
from comfyline.runtime import (
    Bus,
    Delivery,
    ObjectStore,
    Reject,
    cancel_and_wait,
    durable_config,
    ensure_consumer,
    heartbeat,
    job_id_var,
    run_consumer,
)

from .clients import Client, Http, Image, ProviderError, make_client
from .settings import ProviderConfig, Settings

log = logging.getLogger(__name__)
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass
class Provider:
    """One configured provider, its client and what it serves."""

    name: str
    config: ProviderConfig
    client: Client
    models: list[str] = field(default_factory=list)
    running: int = 0

    @property
    def http(self) -> Http:
        return self.client.http

    def status(self) -> ServerStatus:
        return ServerStatus(
            url=self.config.base_url,
            healthy=self.http.reachable and not self.http.gate.holding,
            busy=self.running >= self.config.concurrency,
            models=self.models,
            provider=self.name,
        )


class ProviderWorker:
    """Serves the catalogue's provider models through the configured providers."""

    def __init__(
        self, bus: Bus, store: ObjectStore, catalogue: Catalogue, settings: Settings
    ) -> None:
        self.bus = bus
        self.store = store
        self.catalogue = catalogue
        self.settings = settings
        self.http = httpx.AsyncClient(follow_redirects=False)
        self.providers: dict[str, Provider] = {}
        for template in catalogue:
            spec = template.provider
            if spec is None or spec.provider not in settings.providers:
                continue
            if spec.provider not in self.providers:
                config = settings.providers[spec.provider]
                client = make_client(spec.provider, spec.style, config, self.http)
                self.providers[spec.provider] = Provider(spec.provider, config, client)
            self.providers[spec.provider].models.append(template.name)
        self.jobs: dict[str, asyncio.Task[list[Image]]] = {}
        self.started_at = utcnow()
        self._cancels: Subscription | None = None

    def heartbeat_entry(self) -> WorkerHeartbeat:
        """This worker's ``workers`` entry: a model is listed while its provider is usable."""
        servers = [p.status() for p in self.providers.values()]
        models = sorted({m for s in servers if s.healthy for m in s.models})
        return WorkerHeartbeat(
            worker_id=self.settings.worker_id,
            models=models,
            servers=servers,
            started_at=self.started_at,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; then finish in-flight jobs within the grace period."""
        names = self.bus.names
        await self.bus.ensure_streams(stream_spec(names, s) for s in ("WORK", "RUNS"))
        await self.bus.ensure_buckets(bucket_spec(names, b) for b in ("jobs", "workers"))
        await self.store.ensure_bucket()
        self._cancels = await self.bus.nc.subscribe(names.all_cancels(), cb=self._on_cancel)
        chores = [
            asyncio.create_task(self._beat(), name="heartbeat"),
            asyncio.create_task(self._probe(), name="probe"),
        ]
        consumers = []
        for provider in self.providers.values():
            for model, lane in ((m, lane) for m in provider.models for lane in LANES):
                template = self.catalogue.get(model)
                config = durable_config(
                    names.work_consumer(model, lane),
                    names.work(model, lane),
                    ack_wait_s=self.settings.ack_wait_s,
                    max_deliver=template.retry_limit + 1,
                    max_ack_pending=10_000,
                )
                await ensure_consumer(self.bus, names.stream("WORK"), config)
                consumers.append(
                    asyncio.create_task(
                        run_consumer(
                            self.bus,
                            names.stream("WORK"),
                            names.work_consumer(model, lane),
                            self._handler(provider),
                            stop,
                            concurrency=provider.config.concurrency,
                            max_batch=1,
                            fetch_timeout_s=self.settings.fetch_timeout_s,
                            grace_s=self.settings.shutdown_grace_s,
                        ),
                        name=f"work {model} {lane}",
                    )
                )
        log.info(
            "provider worker started",
            extra={"providers": {p.name: p.models for p in self.providers.values()}},
        )
        try:
            await stop.wait()
        finally:
            await asyncio.gather(*consumers, return_exceptions=True)
            await cancel_and_wait(chores)
            with contextlib.suppress(Exception):
                kv = await self.bus.kv(names.bucket("workers"))
                await kv.delete(self.settings.worker_id)
            if self._cancels is not None:
                await self._cancels.unsubscribe()
            await self.http.aclose()
            await self.store.close()
            log.info("provider worker stopped")

    async def _beat(self) -> None:
        kv = await self.bus.kv(self.bus.names.bucket("workers"))
        while True:
            try:
                await kv.put(self.settings.worker_id, self.heartbeat_entry().to_bytes())
            except Exception:
                log.warning("heartbeat not written", exc_info=True)
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _probe(self) -> None:
        """Is each provider reachable? (Any HTTP answer from its base URL counts.)"""
        while True:
            for provider in self.providers.values():
                try:
                    await self.http.get(provider.config.base_url, timeout=5)
                    provider.http.reachable = True
                except httpx.TransportError:
                    provider.http.reachable = False
            await asyncio.sleep(self.settings.health_interval_s)

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            command = CancelCommand.from_bytes(msg.data)
        except ValueError:
            return
        task = self.jobs.get(command.job_id)
        if task is not None:
            task.cancel()

    def _handler(self, provider: Provider) -> Callable[[Delivery], Awaitable[None]]:
        async def handle(delivery: Delivery) -> None:
            async with heartbeat(delivery.msg, every=self.settings.ack_wait_s / 3):
                await self.handle(provider, delivery)

        return handle

    async def _record(self, job_id: str) -> JobRecord | None:
        kv = await self.bus.kv(self.bus.names.bucket("jobs"))
        try:
            entry = await kv.get(job_id)
        except KeyNotFoundError:
            return None
        return JobRecord.from_bytes(entry.value) if entry.value else None

    async def _report(
        self,
        job: RunJob,
        attempt: int,
        kind: RunEventKind,
        suffix: str = "",
        *,
        server: str,
        progress: Progress | None = None,
        outputs: list[OutputRef] | None = None,
        error: JobError | None = None,
        gpu_seconds: float | None = None,
    ) -> None:
        """Publish one run event (message id ``<job_id>:<attempt>:<kind>[<suffix>]``)."""
        event = RunEvent(
            job_id=job.job_id,
            kind=kind,
            attempt=attempt,
            worker_id=self.settings.worker_id,
            server=server,
            progress=progress,
            outputs=outputs or [],
            error=error,
            gpu_seconds=None if gpu_seconds is None else round(gpu_seconds, 3),
        )
        msg_id = f"{job.job_id}:{attempt}:{kind}{suffix}"
        await self.bus.publish(self.bus.names.run_event(job.job_id, kind), event, msg_id=msg_id)

    async def handle(self, provider: Provider, delivery: Delivery) -> None:
        """Run one job at its provider (the message is settled by ``settle``)."""
        job = delivery.parse(RunJob)
        job_id_var.set(job.job_id)
        attempt = delivery.num_delivered
        record = await self._record(job.job_id)
        if record is not None and (record.cancel_requested or record.status.terminal):
            log.info("job already ended; skipped")
            return
        template = self.catalogue.get(job.model)
        where = provider.config.base_url
        await self._report(job, attempt, "started", server=where)
        began = time.monotonic()
        sent = 0

        async def progress(percent: float) -> None:
            nonlocal sent
            sent += 1
            step = Progress(percent=percent)
            await self._report(job, attempt, "progress", f":{sent}", server=where, progress=step)

        provider.running += 1
        task = asyncio.current_task()
        assert task is not None
        runner = asyncio.create_task(provider.client.generate(template, job.input, progress))
        self.jobs[job.job_id] = runner
        try:
            images = await runner
            outputs = [await self._store(job, i, image) for i, image in enumerate(images)]
        except asyncio.CancelledError:
            if task.cancelling():  # the worker is stopping: the message is naked
                raise
            await self._report(
                job,
                attempt,
                "cancelled",
                server=where,
                error=JobError(code=ErrorCode.CANCELLED, message="cancelled"),
                gpu_seconds=time.monotonic() - began,
            )
            return
        except ComfylineError as exc:
            code = exc.code if isinstance(exc, ProviderError) else ErrorCode.STORAGE_UNAVAILABLE
            error = JobError(code=code, message=exc.message, details=exc.details)
            spent = time.monotonic() - began
            await self._report(job, attempt, "failed", server=where, error=error, gpu_seconds=spent)
            raise Reject(exc.message, code=code) from exc
        finally:
            provider.running -= 1
            self.jobs.pop(job.job_id, None)
        spent = time.monotonic() - began
        await self._report(
            job, attempt, "completed", server=where, outputs=outputs, gpu_seconds=spent
        )
        log.info("job completed", extra={"provider": provider.name, "outputs": len(outputs)})

    async def _store(self, job: RunJob, index: int, image: Image) -> OutputRef:
        ext = EXTENSIONS.get(image.content_type, "bin")
        key = f"{job.output_prefix}{index}.{ext}"
        await self.store.put_bytes(key, image.data, image.content_type)
        return OutputRef(
            index=index,
            key=key,
            kind=OutputKind.IMAGE,
            content_type=image.content_type,
            size=len(image.data),
            width=image.width,
            height=image.height,
            node_id="provider",
        )
