"""The ComfyUI servers a worker drives: health, capability, and one job at a time each.

Each :class:`Server` is checked with ``/system_stats`` (often while up, every second while
down); when it comes up its ``/object_info`` says which catalogue models it can run. A run that
finds ComfyUI gone marks the server down at once; it takes work again only once
``/system_stats`` answers. A server holds up to ``depth`` jobs of ours (pipelined dispatch: one
executing, the others already waiting in ComfyUI's own queue, so it starts the next the moment
one ends); ``busy`` is set while it holds any.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from comfyline.catalogue import render
from comfyline.contracts import ComfylineError, ModelTemplate, ServerStatus
from comfyline.runtime.metrics import BusyClock

from .capability import Capability
from .comfy_client import ComfyClient
from .errors import WorkerError

log = logging.getLogger(__name__)

OnCapability = Callable[["Server"], Awaitable[None]]


def model_files(template: ModelTemplate, data: dict[str, Any]) -> list[str]:
    """The template's model files that a job with input ``data`` reads (its rendered graph's
    inputs; a preset may pick one checkpoint of several)."""
    known = {m.file for m in template.required_models}
    try:
        graph = render(template, data, {})
    except (ComfylineError, KeyError, TypeError, ValueError):
        return sorted(known)
    used = {
        value
        for node in graph.values()
        for value in node.get("inputs", {}).values()
        if isinstance(value, str) and value in known
    }
    return sorted(used)


class Lease:
    """A job's place on a server, given back once: when ComfyUI has finished executing it (its
    outputs may still be on their way to S3), or when the job ends without running."""

    def __init__(self, server: Server, job_id: str, on_release: Callable[[], None]) -> None:
        self.server = server
        self.job_id = job_id
        self._on_release = on_release
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.server.release(self.job_id)
            self._on_release()


class Server:
    """One ComfyUI server as this worker sees it."""

    def __init__(
        self, client: ComfyClient, allowed: Callable[[], list[ModelTemplate]], depth: int = 1
    ) -> None:
        self.client = client
        self.url = client.base_url
        self._allowed = allowed
        self.depth = depth
        self.healthy = False
        self.jobs: list[str] = []  # ours on this server, oldest (the one executing) first
        self.gpu: str | None = None
        self.vram_total: int | None = None
        self.version: str | None = None
        self.capability = Capability()
        self.models: list[str] = []
        self.missing: dict[str, list[str]] = {}
        self.last_model: str | None = None
        self._loaded: list[str] = []
        self._loading: tuple[ModelTemplate, dict[str, Any]] | None = None
        self.object_info: bytes | None = None  # the last /object_info, as canonical JSON
        self.object_info_key: str | None = None  # where it is stored (content-addressed)
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self.changed = asyncio.Event()  # set on every claim, release and change of health
        self._clock = BusyClock(self.url)

    @property
    def busy(self) -> bool:
        """Holding a job of ours (executing, or waiting in ComfyUI's queue)."""
        return bool(self.jobs)

    @property
    def job_id(self) -> str | None:
        """The job of ours that ComfyUI runs now (the oldest one we gave it)."""
        return self.jobs[0] if self.jobs else None

    @property
    def idle(self) -> bool:
        """Up, able to run something, and holding no job of ours."""
        return self.healthy and not self.jobs and bool(self.models)

    @property
    def free(self) -> bool:
        """Up, able to run something, and room for one more job in its pipeline."""
        return self.healthy and len(self.jobs) < self.depth and bool(self.models)

    def status(self) -> ServerStatus:
        """The server's line in the worker's heartbeat."""
        return ServerStatus(
            url=self.url,
            healthy=self.healthy,
            busy=self.busy,
            job_id=self.job_id,
            waiting=self.jobs[1:],
            gpu=self.gpu,
            vram_total=self.vram_total,
            models=self.models,
            loaded=self.loaded,
            object_info=self.object_info_key,
            last_model=self.last_model,
            missing={name: lacks for name, lacks in self.missing.items() if lacks},
        )

    def claim(self, job_id: str) -> None:
        """A job of ours is given to this server (it runs now, or next in ComfyUI's queue)."""
        self.jobs.append(job_id)
        self._clock.set(True)
        self._update_ready()

    def load(self, template: ModelTemplate, data: dict[str, Any]) -> None:
        """A job of ``template`` with input ``data`` runs here: the model files its graph reads
        are what the server has loaded from now on (:attr:`loaded`)."""
        self.last_model = template.name
        self._loading = (template, data)

    @property
    def loaded(self) -> list[str]:
        """The model files the last job given to this server reads. Found when asked (its graph
        rendered once more), not in front of the job's own start."""
        if self._loading is not None:
            self._loaded = model_files(*self._loading)
            self._loading = None
        return self._loaded

    def release(self, job_id: str) -> None:
        """Our job finished executing (its outputs may still be on their way to S3)."""
        with contextlib.suppress(ValueError):
            self.jobs.remove(job_id)
        self._clock.set(self.busy)
        self._update_ready()

    def mark_down(self, reason: str) -> None:
        """ComfyUI failed us: take no work until ``/system_stats`` answers again."""
        if self.healthy:
            log.warning("ComfyUI server down", extra={"server": self.url, "reason": reason})
        self.healthy = False
        self._update_ready()
        self._wake.set()

    def _update_ready(self) -> None:
        if self.free:
            self._ready.set()
        else:
            self._ready.clear()
        self.changed.set()

    async def wait_free(self) -> None:
        """Until the server can take a job."""
        while not self.free:
            await self._ready.wait()

    def _read_stats(self, stats: dict[str, Any]) -> None:
        system = stats.get("system")
        system = system if isinstance(system, dict) else {}
        self.version = str(system.get("comfyui_version") or "") or None
        devices = stats.get("devices")
        devices = devices if isinstance(devices, list) else []
        gpu = next((d for d in devices if isinstance(d, dict)), None)
        if gpu is not None:
            self.gpu = str(gpu.get("name") or "") or None
            total = gpu.get("vram_total")
            self.vram_total = int(total) if isinstance(total, int | float) else None

    async def refresh(self) -> None:
        """Learn what the server can run (``/object_info``) against the allowed models."""
        info = await self.client.object_info()
        self.capability = Capability.from_object_info(info)
        self.object_info = json.dumps(info, sort_keys=True, separators=(",", ":")).encode()
        self.match_models()
        log.info(
            "ComfyUI server capability",
            extra={"server": self.url, "models": self.models, "nodes": len(info)},
        )

    def match_models(self) -> bool:
        """Match the known capability against the allowed models now; True if the list changed.

        The catalogue is live (a model can be published while we run), so this is redone on
        every health check, without asking the server again.
        """
        templates = self._allowed()
        self.missing = {t.name: self.capability.missing(t) for t in templates}
        models = sorted(name for name, lacks in self.missing.items() if not lacks)
        changed = models != self.models
        self.models = models
        return changed

    async def check(self) -> bool:
        """One health check; on the way up, capability is read again."""
        try:
            stats = await self.client.system_stats()
            self._read_stats(stats)
            if not self.healthy:
                await self.refresh()
        except WorkerError as exc:
            self.mark_down(exc.message)
            return False
        if not self.healthy:
            log.info("ComfyUI server up", extra={"server": self.url, "gpu": self.gpu})
        self.healthy = True
        self._update_ready()
        return True

    async def monitor(self, on_up: OnCapability, up_every_s: float, down_every_s: float) -> None:
        """Check health forever: rarely while up, often while down; ``on_up`` on each rise."""
        while True:
            was_up = self.healthy
            up = await self.check()
            unshared = self.object_info is not None and self.object_info_key is None
            if up and (not was_up or self.match_models() or unshared):
                await on_up(self)  # again while /object_info could not be stored
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(up_every_s if up else down_every_s):
                    await self._wake.wait()
