"""The client's pure parts: the SSE parser, where the gateway is found, the retry delay."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from comfyline.client import ComfylineError, Retry, Target
from comfyline.client.core import SseParser


def test_the_sse_parser_yields_each_event_with_its_id_and_skips_comments() -> None:
    parser = SseParser()
    lines = [
        "retry: 2000",
        "",
        ": heartbeat",
        "",
        "id: 7",
        "event: progress",
        'data: {"a":',
        "data: 1}",
        "",
    ]
    events = [event for line in lines for event in parser.feed(line)]
    assert events == [("progress", "7", '{"a":\n1}')]


def test_the_target_comes_from_arguments_then_environment_then_stack_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = tmp_path / "stack.json"
    stack.write_text(json.dumps({"gateway_url": "http://stack:1/", "api_key": "cl_stack"}))
    monkeypatch.delenv("COMFYLINE_URL", raising=False)
    monkeypatch.delenv("COMFYLINE_API_KEY", raising=False)
    assert Target.find(stack=stack) == Target("http://stack:1", "cl_stack")
    monkeypatch.setenv("COMFYLINE_API_KEY", "cl_env")
    assert Target.find(stack=stack) == Target("http://stack:1", "cl_env")
    assert Target.find("http://arg:2", "cl_arg", stack) == Target("http://arg:2", "cl_arg")
    with pytest.raises(ComfylineError) as missing:
        Target.find(stack=tmp_path / "absent.json")
    assert missing.value.code == "no_gateway"


def test_retry_after_wins_over_the_backoff() -> None:
    retry = Retry(base_s=0.5, max_s=30)
    hinted = httpx.Response(429, headers={"Retry-After": "7"})
    assert retry.delay(1, hinted) == 7
    assert retry.delay(1, httpx.Response(429, headers={"Retry-After": "600"})) == 30
    assert 1.0 <= retry.delay(3, None) <= 2.0


def test_an_error_answer_keeps_the_servers_code() -> None:
    body = {"error": "no such model", "code": "unknown_model", "details": {}, "request_id": "req_1"}
    error = ComfylineError.from_response(httpx.Response(422, json=body))
    assert (error.status, error.code, error.request_id) == (422, "unknown_model", "req_1")
