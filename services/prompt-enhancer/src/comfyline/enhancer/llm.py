"""An OpenAI-compatible chat client for the optional LLM rewrite.

Any server that speaks ``POST <url>/chat/completions`` works: OpenAI, vLLM, llama.cpp's server,
Ollama (``http://host:11434/v1``), LiteLLM. Every call is bounded by ``timeout_s`` as a whole (not
only per read), and every failure becomes an :class:`LlmUnavailable` with a stable reason, so the
caller falls back to the rules. After ``failure_threshold`` failures in a row the client stops
calling for ``cooldown_s`` (a circuit breaker), so a dead endpoint does not cost every request
its timeout.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Literal

import httpx

from .settings import LlmSettings

log = logging.getLogger(__name__)

Reason = Literal[
    "llm_timeout", "llm_error", "llm_empty", "llm_unavailable", "llm_policy", "llm_syntax"
]

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_LABEL = re.compile(r"^\s*(?:(?:enhanced|improved|rewritten|final)\s+)?prompt\s*:\s*", re.I)
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "`": "`"}


class LlmUnavailable(Exception):
    """The LLM gave no usable answer; ``reason`` says why (it becomes ``fallback_reason``)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


def clean_reply(text: str) -> str:
    """The prompt in a chat answer: reasoning, code fences, a "Prompt:" label and quotes removed."""
    text = _THINK.sub("", text).strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    text = _LABEL.sub("", text.strip()).strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1]
    return " ".join(text.split())


class ChatClient:
    """Rewrites prompts through one OpenAI-compatible chat endpoint."""

    def __init__(
        self,
        settings: LlmSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        headers = {"Content-Type": "application/json"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            headers=headers,
            transport=transport,
        )

    @property
    def configured(self) -> bool:
        """Whether an endpoint and a model are set and the LLM is enabled."""
        return self.settings.configured

    @property
    def endpoint(self) -> str:
        """The chat-completions URL."""
        url = (self.settings.url or "").rstrip("/")
        return url if url.endswith("/chat/completions") else f"{url}/chat/completions"

    async def rewrite(self, system: str, prompt: str) -> str:
        """The LLM's rewrite of ``prompt`` under the ``system`` instructions.

        Raises:
            LlmUnavailable: not configured, breaker open, timeout, HTTP or protocol error, or an
                empty answer.
        """
        if not self.configured:
            raise LlmUnavailable("llm_unavailable", "no LLM endpoint is configured")
        if self._clock() < self._open_until:
            raise LlmUnavailable("llm_unavailable", "LLM calls paused after repeated failures")
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                text = await self._complete(system, prompt)
        except TimeoutError as exc:
            self._failed()
            raise LlmUnavailable(
                "llm_timeout", f"no answer within {self.settings.timeout_s}s"
            ) from exc
        except httpx.TimeoutException as exc:
            self._failed()
            raise LlmUnavailable("llm_timeout", f"timed out: {type(exc).__name__}") from exc
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            self._failed()
            raise LlmUnavailable("llm_error", f"{type(exc).__name__}: {exc}"[:200]) from exc
        self._failures = 0
        cleaned = clean_reply(text)
        if not cleaned:
            raise LlmUnavailable("llm_empty", "the LLM answered with no prompt")
        return cleaned

    async def _complete(self, system: str, prompt: str) -> str:
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": prompt},
            ],
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
            "stream": False,
        }
        response = await self._http.post(self.endpoint, json=body)
        if response.status_code >= 400:
            raise ValueError(f"HTTP {response.status_code}: {response.text[:120]}")
        content = response.json()["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise TypeError("message content is not text")
        return content

    def _failed(self) -> None:
        # Not reset when the breaker opens: after the pause, one more failure reopens it at once.
        self._failures += 1
        if self._failures >= self.settings.failure_threshold:
            self._open_until = self._clock() + self.settings.cooldown_s
            cooldown = self.settings.cooldown_s
            log.warning("LLM failing; pausing calls", extra={"cooldown_s": cooldown})

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()
