"""Test helpers: a fake OpenAI-compatible chat server, sample models, a running enhancer.

:class:`FakeChatServer` listens on loopback for tests and GPU-less demos.

It answers ``POST .../chat/completions`` the way OpenAI's API does (same JSON shape), records
every request, and can be told to answer slowly, fail, or say something odd::

    async with FakeChatServer(reply="a red fox, golden hour") as server:
        settings = LlmSettings(enabled=True, url=server.url, model="fake")
        ...
        server.delay_s = 5          # now every answer is late
        server.status = 500         # now every answer is an error

Only HTTP/1.1 with ``Content-Length`` bodies and one request per connection: what httpx and
OpenAI's SDK send. Not for production.

:func:`sample_catalogue` holds models shaped like the real ones (an SDXL-like with a 75-token CLIP
budget, a WAN-like with a 175-token estimate) plus the edge cases; :func:`running` runs an
:class:`~comfyline.enhancer.Enhancer` in the background for the length of a ``with`` block.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from comfyline.catalogue import Catalogue
from comfyline.contracts import ModelTemplate
from comfyline.enhancer.service import Enhancer

Reply = str | Callable[[dict[str, Any]], str]


@dataclass
class ChatCall:
    """One request the fake received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def system(self) -> str:
        """The system message's text."""
        return str(next(m["content"] for m in self.body["messages"] if m["role"] == "system"))

    @property
    def user(self) -> str:
        """The user message's text."""
        return str(next(m["content"] for m in self.body["messages"] if m["role"] == "user"))


@dataclass
class FakeChatServer:
    """An OpenAI-compatible ``/v1/chat/completions`` on ``127.0.0.1``, port chosen by the OS."""

    reply: Reply = "an enhanced prompt"
    delay_s: float = 0.0
    status: int = 200
    raw_body: bytes | None = None
    calls: list[ChatCall] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        """The base URL to configure (``.../v1``)."""
        assert self._server is not None, "not started"
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        """Stop listening and drop open connections."""
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeChatServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            lines = head.decode("latin-1").split("\r\n")
            _, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
            }
            length = int(headers.get("content-length", "0"))
            raw = await asyncio.wait_for(reader.readexactly(length), timeout=5) if length else b""
            body = json.loads(raw or b"{}")
            self.calls.append(ChatCall(path, headers, body))
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            status, payload = self._answer(path, body)
            reason = {200: "OK", 404: "Not Found"}.get(status, "Error")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        if not path.rstrip("/").endswith("/chat/completions"):
            return 404, b'{"error": {"message": "not found", "type": "invalid_request_error"}}'
        if self.status != 200:
            error = {"error": {"message": "fake failure", "type": "server_error"}}
            return self.status, json.dumps(error).encode()
        if self.raw_body is not None:
            return 200, self.raw_body
        text = self.reply(body) if callable(self.reply) else self.reply
        completion = {
            "id": f"chatcmpl-fake{len(self.calls)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
        return 200, json.dumps(completion).encode()


def sample_template(
    name: str,
    *,
    budget: int | None = 75,
    tokenizer: str = "clip",
    kind: str = "image",
    quality_tags: list[str] | None = None,
    default_negative: str | None = None,
    enhance: bool = True,
    presets: dict[str, dict[str, Any]] | None = None,
) -> ModelTemplate:
    """A small model template with a prompt spec (``budget=None``: without one), for tests."""
    prompt = (
        None
        if budget is None
        else {
            "param": "prompt",
            "negative_param": "negative_prompt",
            "budget_tokens": budget,
            "tokenizer": tokenizer,
            "quality_tags": quality_tags or [],
            "default_negative": default_negative,
        }
    )
    return ModelTemplate.model_validate(
        {
            "name": name,
            "version": 1,
            "kind": kind,
            "title": f"Test model {name}",
            "description": "a template for the enhancer's tests",
            "graph": {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": ""}}},
            "parameters": {"type": "object", "properties": {"prompt": {"type": "string"}}},
            "bindings": [{"param": "prompt", "node": "1", "input": "text"}],
            "outputs": [{"node": "1", "kind": "image"}],
            "prompt": prompt,
            "enhance": enhance,
            "presets": presets or {},
        }
    )


def sample_catalogue() -> Catalogue:
    """Models shaped like the real ones (an SDXL-like, a WAN-like), plus the edge cases."""
    return Catalogue(
        [
            sample_template(
                "test-sdxl",
                quality_tags=["masterpiece", "best quality", "highly detailed"],
                default_negative="lowres, bad anatomy, blurry, watermark",
                presets={"fast": {"steps": 4}},
            ),
            sample_template(
                "test-wan",
                budget=175,
                tokenizer="estimate",
                kind="video",
                quality_tags=["smooth motion", "cinematic"],
                default_negative="static, blurry, low quality",
            ),
            sample_template("test-plain", enhance=False, quality_tags=["masterpiece"]),
            sample_template("test-noprompt", budget=None),
        ]
    )


@contextlib.asynccontextmanager
async def running(enhancer: Enhancer, timeout_s: float = 10.0) -> AsyncIterator[Enhancer]:
    """Run ``enhancer`` until the block ends; its subscriptions are live when the block starts."""
    stop = asyncio.Event()
    task = asyncio.create_task(enhancer.run(stop))
    ready = asyncio.create_task(enhancer.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=timeout_s, return_when="FIRST_COMPLETED")
    if ready not in done:
        ready.cancel()
        stop.set()
        if task in done:
            task.result()  # raises why it stopped
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=timeout_s)
        raise TimeoutError("the enhancer did not start in time")
    try:
        yield enhancer
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=timeout_s)
