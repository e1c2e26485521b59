"""The OpenAI-compatible client against a local fake server: answers, timeouts, errors, breaker."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from comfyline.enhancer import ChatClient, LlmSettings, LlmUnavailable, clean_reply
from comfyline.testkit.enhancer import FakeChatServer


@pytest.fixture
async def server() -> AsyncIterator[FakeChatServer]:
    async with FakeChatServer(reply="a red fox, golden hour, soft light") as fake:
        yield fake


def settings(server: FakeChatServer, **overrides: object) -> LlmSettings:
    values: dict[str, object] = {"enabled": True, "url": server.url, "model": "fake-1"}
    values.update(overrides)
    return LlmSettings.model_validate(values)


async def test_rewrite_sends_an_openai_chat_request(server: FakeChatServer) -> None:
    client = ChatClient(settings(server, api_key=SecretStr("sk-test"), temperature=0.1))
    try:
        assert await client.rewrite("be brief", "a red fox") == "a red fox, golden hour, soft light"
    finally:
        await client.aclose()
    (call,) = server.calls
    assert call.path == "/v1/chat/completions"
    assert call.headers["authorization"] == "Bearer sk-test"
    assert call.body["model"] == "fake-1"
    assert call.body["temperature"] == 0.1
    assert (call.system, call.user) == ("be brief", "a red fox")


async def test_a_full_endpoint_url_is_used_as_given(server: FakeChatServer) -> None:
    client = ChatClient(settings(server, url=server.url + "/chat/completions"))
    try:
        await client.rewrite("s", "p")
    finally:
        await client.aclose()
    assert server.calls[0].path == "/v1/chat/completions"
    assert "authorization" not in server.calls[0].headers


async def test_a_slow_answer_times_out_within_the_timeout(server: FakeChatServer) -> None:
    server.delay_s = 5
    client = ChatClient(settings(server, timeout_s=0.3))
    started = time.monotonic()
    try:
        with pytest.raises(LlmUnavailable) as failed:
            await client.rewrite("s", "p")
    finally:
        await client.aclose()
    assert failed.value.reason == "llm_timeout"
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("status", "raw", "reason"),
    [
        (500, None, "llm_error"),
        (401, None, "llm_error"),
        (200, b"not json", "llm_error"),
        (200, b'{"choices": []}', "llm_error"),
        (200, b'{"choices": [{"message": {"content": null}}]}', "llm_error"),
        (200, b'{"choices": [{"message": {"content": "  \\"\\"  "}}]}', "llm_empty"),
    ],
)
async def test_bad_answers_fail_with_a_reason(
    server: FakeChatServer, status: int, raw: bytes | None, reason: str
) -> None:
    server.status, server.raw_body = status, raw
    client = ChatClient(settings(server))
    try:
        with pytest.raises(LlmUnavailable) as failed:
            await client.rewrite("s", "p")
    finally:
        await client.aclose()
    assert failed.value.reason == reason


async def test_an_unreachable_endpoint_is_an_error() -> None:
    fake = FakeChatServer()
    await fake.start()
    url = fake.url
    await fake.stop()
    client = ChatClient(LlmSettings(enabled=True, url=url, model="m", timeout_s=1))
    try:
        with pytest.raises(LlmUnavailable) as failed:
            await client.rewrite("s", "p")
    finally:
        await client.aclose()
    assert failed.value.reason == "llm_error"


async def test_not_configured_is_unavailable() -> None:
    client = ChatClient(LlmSettings(enabled=False, url="http://127.0.0.1:9/v1", model="m"))
    try:
        with pytest.raises(LlmUnavailable) as failed:
            await client.rewrite("s", "p")
    finally:
        await client.aclose()
    assert failed.value.reason == "llm_unavailable"


async def test_the_breaker_pauses_calls_after_repeated_failures(server: FakeChatServer) -> None:
    now = [0.0]
    server.status = 500
    client = ChatClient(settings(server, failure_threshold=2, cooldown_s=30), clock=lambda: now[0])
    try:
        for expected in ("llm_error", "llm_error", "llm_unavailable", "llm_unavailable"):
            with pytest.raises(LlmUnavailable) as failed:
                await client.rewrite("s", "p")
            assert failed.value.reason == expected
        assert len(server.calls) == 2  # the paused calls never reached the server
        now[0] = 31.0
        server.status = 200
        assert await client.rewrite("s", "p") == "a red fox, golden hour, soft light"
        assert len(server.calls) == 3
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("answer", "prompt"),
    [
        ("a fox", "a fox"),
        ('"a fox, snow"', "a fox, snow"),
        ("Prompt: a fox", "a fox"),
        ("Enhanced prompt:\n  a fox,\n snow", "a fox, snow"),
        ("```\na fox\n```", "a fox"),
        ("<think>the user wants a fox</think>\n(a fox:1.2)", "(a fox:1.2)"),
        ("\u201ca fox\u201d", "a fox"),
    ],
)
def test_clean_reply(answer: str, prompt: str) -> None:
    assert clean_reply(answer) == prompt
