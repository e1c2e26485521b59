"""Fixtures for the gateway's tests: a gateway on real NATS and S3, keys, and an orchestrator
stand-in (tests write job records and publish later events by hand, as the orchestrator would).
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from comfyline.contracts import (
    EVENT_NAMES,
    TERMINAL_EVENTS,
    EventKind,
    JobEvent,
    JobRecord,
    JobState,
    ModelTemplate,
    Names,
    OutputKind,
    OutputRef,
    Progress,
    utcnow,
)
from comfyline.gateway import Settings, create_app
from comfyline.gateway.settings import AuthSettings, LimitSettings
from comfyline.orchestrator.usage import release_active
from comfyline.runtime import Bus, FreshOutputs, NatsSettings, ObjectStore, S3Settings
from comfyline.stack import free_port
from comfyline.testkit.orchestrator import not_ended

ADMIN_KEY = "cl_admin-bootstrap-key-for-tests-0123456789abcdef"
JWT_SECRET = "jwt-test-secret-0123456789abcdef0123456789"
EVENTS_SECRET = "events-test-secret-0123456789abcdef0123456"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}

#: An SDXL-class test model: prompt, sizes in multiples of 64, steps, guidance, an asset input.
SDXL_TEST = ModelTemplate(
    name="test-sdxl",
    version=3,
    kind="image",
    title="SDXL-class test model",
    description="A test template with SDXL-class parameter rules.",
    graph={
        "1": {"class_type": "LoadImage", "inputs": {"image": ""}},
        "2": {"class_type": "KSampler", "inputs": {"steps": 20, "cfg": 7.0, "seed": 0}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": ""}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
    },
    parameters={
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "minLength": 1, "maxLength": 2000},
            "width": {
                "type": "integer",
                "minimum": 64,
                "maximum": 2048,
                "multipleOf": 64,
                "default": 1024,
            },
            "height": {
                "type": "integer",
                "minimum": 64,
                "maximum": 2048,
                "multipleOf": 64,
                "default": 1024,
            },
            "steps": {"type": "integer", "minimum": 1, "maximum": 100, "default": 30},
            "guidance": {"type": "number", "minimum": 0, "maximum": 30, "default": 7.0},
            "sampler": {"type": "string", "enum": ["euler", "dpmpp_2m"], "default": "euler"},
            "seed": {"type": "integer", "minimum": -1, "maximum": 4294967295, "default": -1},
            "image": {
                "description": "an image: an asset id, an earlier output, or an https URL",
                "x-asset-kinds": ["image"],
                "oneOf": [
                    {"type": "string", "pattern": "^ast_[0-9a-z]{26}$"},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["job"],
                        "properties": {
                            "job": {"type": "string", "pattern": "^job_[0-9a-z]{26}$"},
                            "output": {"type": "integer", "minimum": 0, "default": 0},
                        },
                    },
                ],
            },
        },
    },
    bindings=[
        {"param": "image", "node": "1", "input": "image", "transform": "asset"},
        {"param": "steps", "node": "2", "input": "steps"},
        {"param": "guidance", "node": "2", "input": "cfg"},
        {"param": "seed", "node": "2", "input": "seed"},
        {"param": "prompt", "node": "3", "input": "text"},
    ],
    outputs=[{"node": "4", "kind": "image"}],
    prompt={"param": "prompt", "budget_tokens": 75},
    max_queue=2,
    cost_per_gpu_second=0.001,
)


def png(width: int = 8, height: int = 4) -> bytes:
    """A valid PNG of ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def wav(seconds: float = 0.01) -> bytes:
    """A valid (silent) WAV file."""
    frames = int(8000 * seconds)
    data = b"\x00\x00" * frames
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data"
    return header + struct.pack("<I", len(data)) + data


def make_settings(namespace: str, nats: NatsSettings, s3: S3Settings, **overrides: Any) -> Settings:
    """Gateway settings for a test namespace (defaults that keep tests fast)."""
    base: dict[str, Any] = {
        "environment": "development",
        "namespace": namespace,
        "nats": nats,
        "s3": s3,
        "events_token_secret": EVENTS_SECRET,
        "auth": AuthSettings(admin_api_key=ADMIN_KEY, jwt_secret=JWT_SECRET),
        "limits": LimitSettings(),
        "sse_heartbeat_s": 0.3,
        "status_cache_s": 0,
        "models_refresh_s": 30,
        "prefer_wait_max_s": 10,
        "request_timeout_s": 2,
        "enhance_timeout_s": 2,
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def settings(namespace: str, nats_settings: NatsSettings, s3_settings: S3Settings) -> Settings:
    return make_settings(namespace, nats_settings, s3_settings)


async def publish_models(bus: Bus, *templates: ModelTemplate) -> None:
    """Put templates in the ``models`` bucket, as a catalogue publisher would."""
    kv = await bus.kv(bus.names.bucket("models"))
    for template in templates:
        await kv.put(template.name, template.model_dump_json().encode())


@pytest.fixture
async def gateway(settings: Settings, bus: Bus) -> AsyncIterator[FastAPI]:
    """A gateway app, started (lifespan entered), with the SDXL-class test model published."""
    await publish_models(bus, SDXL_TEST)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(gateway: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the gateway in-process."""
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as http:
        yield http


async def new_key(
    client: httpx.AsyncClient,
    owner: str,
    *,
    role: str = "user",
    limits: dict[str, float] | None = None,
) -> dict[str, str]:
    """Headers with a fresh API key of ``owner`` (made by the bootstrap admin)."""
    body: dict[str, Any] = {"owner": owner, "role": role, "name": f"{owner}-key"}
    if limits:
        body["limits"] = limits
    response = await client.post("/v1/keys", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['secret']}"}


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> dict[str, str]:
    return await new_key(client, "alice", limits={"submit_per_min": 500, "status_per_min": 1000})


@pytest.fixture
async def bob(client: httpx.AsyncClient) -> dict[str, str]:
    return await new_key(client, "bob", limits={"submit_per_min": 500, "status_per_min": 1000})


# --- playing the orchestrator's part -------------------------------------------------------------
@dataclass
class Orchestrator:
    """Writes job records and publishes later events, as the orchestrator does."""

    bus: Bus
    store: ObjectStore

    @property
    def names(self) -> Names:
        return self.bus.names

    async def record(self, job_id: str) -> JobRecord:
        kv = await self.bus.kv(self.names.bucket("jobs"))
        entry = await kv.get(job_id)
        assert entry.value is not None
        return JobRecord.from_bytes(entry.value)

    async def write(self, record: JobRecord) -> None:
        kv = await self.bus.kv(self.names.bucket("jobs"))
        await kv.put(record.id, record.to_bytes())

    async def event(self, record: JobRecord, kind: EventKind, n: int = 0, **fields: Any) -> int:
        """Publish one event of ``record`` (after writing the record); its stream sequence."""
        event = JobEvent(
            job_id=record.id,
            owner=record.owner,
            model=record.model,
            kind=kind,
            status=EVENT_NAMES[kind].state,
            attempt=1,
            **fields,
        )
        subject = self.names.job_event(record.owner, record.id, kind.value)
        ack = await self.bus.publish(subject, event, msg_id=f"{record.id}:{kind.value}:{n}")
        if kind in TERMINAL_EVENTS:  # what the orchestrator's usage consumer does with it
            await release_active(self.bus, record.owner, int(ack.seq))
        return int(ack.seq)

    async def run(self, job_id: str, *, outputs: int = 1, progress_steps: int = 2) -> JobRecord:
        """Take a submitted job through started, progress and completed, with real outputs."""
        record = await self.queued(job_id)
        record = record.model_copy(
            update={"status": JobState.RUNNING, "started_at": utcnow(), "attempts": 1}
        )
        await self.write(record)
        await self.event(record, EventKind.STARTED)
        for step in range(1, progress_steps + 1):
            percent = 100.0 * step / (progress_steps + 1)
            await self.event(
                record,
                EventKind.PROGRESS,
                step,
                progress=Progress(percent=percent, step=step, steps=progress_steps),
            )
        return await self.complete(record, outputs=outputs)

    async def queued(self, job_id: str) -> JobRecord:
        """The record the orchestrator would create from the submission."""
        from comfyline.gateway.joblog import JobLog

        event = await JobLog(self.bus).submitted(job_id)
        assert event is not None, "no submission"
        record = JobRecord.from_submitted(event)
        await self.write(record)
        return record

    async def complete(
        self, record: JobRecord, *, outputs: int = 1, fresh: FreshOutputs | None = None
    ) -> JobRecord:
        """End the job with ``outputs`` PNGs, stored in S3, or kept in ``fresh`` only (as a
        worker keeps them, before its archiver has copied them)."""
        refs = []
        for index in range(outputs):
            data = png(16, 8)
            key = f"outputs/{record.owner}/{record.id}/{index}.png"
            fresh_until = None
            if fresh is not None:
                fresh_until = await fresh.put(key, data, "image/png")
                assert fresh_until is not None
            else:
                await self.store.put_bytes(key, data, "image/png")
            refs.append(
                OutputRef(
                    index=index,
                    key=key,
                    kind=OutputKind.IMAGE,
                    content_type="image/png",
                    size=len(data),
                    width=16,
                    height=8,
                    fresh_until=fresh_until,
                )
            )
        done = record.model_copy(
            update={
                "status": JobState.SUCCEEDED,
                "last_event": EventKind.COMPLETED,
                "finished_at": utcnow(),
                "outputs": refs,
                "attempts": 1,
            }
        )
        await self.write(done)
        await self.event(done, EventKind.COMPLETED, outputs=refs)
        return done


@pytest.fixture
def orchestrator(bus: Bus, store: ObjectStore) -> Orchestrator:
    return Orchestrator(bus, store)


# --- a real server, for streaming ----------------------------------------------------------------
@dataclass
class Served:
    """A gateway served by uvicorn on a loopback port."""

    app: FastAPI
    url: str


async def serve(app: FastAPI) -> tuple[Served, Callable[[], Coroutine[Any, Any, None]]]:
    """Start uvicorn in this event loop; returns the server and its stopper."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(20):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)

    async def stop() -> None:
        server.should_exit = True
        await asyncio.wait_for(task, 20)

    return Served(app, f"http://127.0.0.1:{port}"), stop


@pytest.fixture
async def served(settings: Settings, bus: Bus) -> AsyncIterator[Served]:
    """The gateway behind a real uvicorn (SSE and WebSocket need a real server)."""
    await publish_models(bus, SDXL_TEST)
    running, stop = await serve(create_app(settings))
    try:
        yield running
    finally:
        await stop()


def upload_files(
    data: bytes, content_type: str, name: str = "file", filename: str = "x.bin"
) -> Any:
    return {name: (filename, io.BytesIO(data), content_type)}


async def active_count(bus: Bus, owner: str) -> int:
    """The owner's jobs that have not ended: accepted less ended."""
    return (await not_ended(bus, owner))[0]
