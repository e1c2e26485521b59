"""Fixtures for the enhancer's tests: a fake LLM, a running enhancer, request helpers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest

from comfyline.contracts import Enhancement, EnhanceReply, EnhanceRequest, Names
from comfyline.enhancer import Enhancer, LlmSettings, Settings
from comfyline.runtime import Bus, NatsSettings
from comfyline.testkit.enhancer import FakeChatServer, running, sample_catalogue

SettingsFor = Callable[..., Settings]
Ask = Callable[..., Coroutine[Any, Any, Enhancement]]
AskRaw = Callable[[str, bytes], Awaitable[dict[str, Any]]]


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeChatServer]:
    """A fake OpenAI-compatible server whose default answer is a richer fox."""
    async with FakeChatServer(reply="a red fox in deep snow, golden hour, soft rim light") as fake:
        yield fake


@pytest.fixture
def settings_for(namespace: str, nats_settings: NatsSettings) -> SettingsFor:
    """Settings in this test's namespace; ``llm=`` a fake server turns the LLM on (0.5 s)."""

    def make(llm: FakeChatServer | None = None, **extra: Any) -> Settings:
        values: dict[str, Any] = {"namespace": namespace, "nats": nats_settings, **extra}
        if llm is not None:
            values["llm"] = LlmSettings(enabled=True, url=llm.url, model="fake-1", timeout_s=0.5)
            values.setdefault("request_timeout_s", 3.0)
        return Settings.model_validate(values)

    return make


@pytest.fixture
async def enhancer(
    bus: Bus, settings_for: SettingsFor, llm_server: FakeChatServer
) -> AsyncIterator[Enhancer]:
    """An enhancer serving this test's namespace, with the fake LLM and the sample models."""
    async with running(Enhancer(bus, sample_catalogue(), settings_for(llm_server))) as served:
        yield served


@pytest.fixture
def ask(bus: Bus, names: Names) -> Ask:
    """Send an ``enhance.v1`` request (model ``test-sdxl`` unless given); the enhancement."""

    async def send(**fields: Any) -> Enhancement:
        request = EnhanceRequest.model_validate({"model": "test-sdxl", **fields})
        reply = await bus.request(names.enhance(), request, EnhanceReply, timeout=5)
        assert reply.ok and reply.enhancement is not None, reply
        return reply.enhancement

    return send


@pytest.fixture
def ask_raw(bus: Bus) -> AskRaw:
    """Send raw bytes on a subject; the reply as JSON."""

    async def send(subject: str, payload: bytes) -> dict[str, Any]:
        reply = await bus.nc.request(subject, payload, timeout=5)
        data: dict[str, Any] = json.loads(reply.data)
        return data

    return send
