"""Hosted image APIs: an OpenAI-compatible images endpoint and a queue API (submit, poll, fetch).

Both go through :class:`Http`, which owns the retry rules, so no job can start a retry storm:

- a 429 or a 5xx (or no answer) is retried at most ``max_retries`` times per request, after the
  provider's ``Retry-After`` (seconds or an HTTP date) or else an exponential pause;
- while a provider has asked to wait, *every* request to it waits (:class:`Gate`), so many jobs
  in flight make one pause, not many retries; and the worker reports the provider unavailable;
- past the retries (or a ``Retry-After`` longer than ``max_retry_after_s``) the job fails with a
  stable code: ``provider_rate_limited`` (429) or ``provider_unavailable`` (5xx, no answer); any
  other 4xx fails at once with ``provider_error`` (``content_policy`` when the provider says so).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from comfyline.contracts import ComfylineError, ErrorCode, ModelTemplate

from .settings import ProviderConfig

log = logging.getLogger(__name__)
OnProgress = Callable[[float], Awaitable[None]]


class ProviderError(ComfylineError):
    """A provider refused or failed a job (after the allowed retries)."""

    code = ErrorCode.PROVIDER_ERROR


@dataclass(frozen=True, slots=True)
class Image:
    """One image a provider made."""

    data: bytes
    content_type: str
    width: int | None = None
    height: int | None = None


def image_size(data: bytes) -> tuple[int | None, int | None]:
    """Width and height of a PNG (from its header), else unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return None, None


def retry_after(response: httpx.Response) -> float | None:
    """The provider's ``Retry-After`` in seconds (a number or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time())


class Gate:
    """One provider's "not before": every request waits while the provider asked us to."""

    def __init__(self) -> None:
        self.until = 0.0

    def hold(self, seconds: float) -> None:
        self.until = max(self.until, time.monotonic() + seconds)

    @property
    def holding(self) -> bool:
        return time.monotonic() < self.until

    async def wait(self) -> None:
        """Until the provider's pause is over (a later ``hold`` extends it)."""
        while (left := self.until - time.monotonic()) > 0:  # noqa: ASYNC110 - a deadline, not an event
            await asyncio.sleep(left)


def _message(response: httpx.Response) -> tuple[str, str | None]:
    """The provider's error message and code, from the usual body shapes."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase, None
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("detail") or error)[:300]
        return message, error.get("code") or error.get("type")
    return str(error)[:300], None


class Http:
    """Requests to one provider, with its key, its gate and the retry rules."""

    def __init__(
        self, name: str, config: ProviderConfig, client: httpx.AsyncClient, auth: str
    ) -> None:
        self.name = name
        self.config = config
        self.client = client
        self.gate = Gate()
        self.auth = auth
        self.reachable = True
        self.retries = 0

    def headers(self) -> dict[str, str]:
        key = self.config.api_key.get_secret_value() if self.config.api_key else None
        return {"Authorization": f"{self.auth} {key}"} if key else {}

    async def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on 429 / 5xx / no answer within the rules above."""
        tries = self.config.max_retries + 1
        for attempt in range(1, tries + 1):
            await self.gate.wait()
            try:
                response = await self.client.request(
                    method, url, headers=self.headers(), timeout=self.config.timeout_s, **kwargs
                )
            except httpx.TransportError as exc:
                self.reachable = False
                code, status, wait = ErrorCode.PROVIDER_UNAVAILABLE, None, None
                message = f"{self.name} did not answer: {type(exc).__name__}"
            else:
                self.reachable = True
                if response.status_code < 400:
                    return response
                status = response.status_code
                message, provider_code = _message(response)
                if status != 429 and status < 500:
                    code = (
                        ErrorCode.CONTENT_POLICY
                        if provider_code and "policy" in str(provider_code)
                        else ErrorCode.PROVIDER_ERROR
                    )
                    raise ProviderError(
                        f"{self.name} refused the request ({status}): {message}",
                        code=code,
                        details={"provider": self.name, "status": status},
                    )
                code = (
                    ErrorCode.PROVIDER_RATE_LIMITED
                    if status == 429
                    else ErrorCode.PROVIDER_UNAVAILABLE
                )
                wait = retry_after(response)
            pause = wait if wait is not None else self.config.retry_base_s * 2 ** (attempt - 1)
            details = {"provider": self.name, "status": status, "attempts": attempt}
            if attempt == tries or pause > self.config.max_retry_after_s:
                raise ProviderError(
                    f"{message}; gave up after {attempt} tries", code=code, details=details
                )
            self.retries += 1
            self.gate.hold(pause)
            log.warning(
                "provider asked to wait",
                extra={"provider": self.name, "status": status, "pause_s": round(pause, 3)},
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def url(self, path: str) -> str:
        return f"{self.config.base_url.rstrip('/')}/{path.lstrip('/')}"

    async def fetch(self, url: str) -> Image:
        """Download an output the provider links to."""
        response = await self.call("GET", url)
        content_type = response.headers.get("content-type", "image/png").split(";")[0]
        data = response.content
        width, height = image_size(data)
        return Image(data, content_type, width, height)


def provider_input(template: ModelTemplate, data: dict[str, Any]) -> dict[str, Any]:
    """The job's input under the provider's field names (``provider.params`` renames)."""
    assert template.provider is not None
    renames = template.provider.params
    return {renames.get(k, k): v for k, v in data.items() if v is not None}


class OpenAIImages:
    """``POST {base}/images/generations`` (OpenAI-compatible; ``b64_json`` or ``url`` data)."""

    def __init__(self, http: Http) -> None:
        self.http = http

    async def generate(
        self, template: ModelTemplate, data: dict[str, Any], progress: OnProgress
    ) -> list[Image]:
        assert template.provider is not None
        body = {
            "model": self.http.config.model or template.provider.model,
            "n": 1,
            "response_format": "b64_json",
            **provider_input(template, data),
        }
        response = await self.http.call("POST", self.http.url("images/generations"), json=body)
        images = []
        for item in response.json().get("data", []):
            if item.get("b64_json"):
                raw = base64.b64decode(item["b64_json"])
                width, height = image_size(raw)
                images.append(Image(raw, "image/png", width, height))
            elif item.get("url"):
                images.append(await self.http.fetch(item["url"]))
        if not images:
            raise ProviderError(
                f"{self.http.name} returned no image", code=ErrorCode.PROVIDER_ERROR
            )
        await progress(100.0)
        return images


class QueueApi:
    """A queue API: ``POST {base}/{model}`` -> ``status_url`` polled until ``COMPLETED`` ->
    ``response_url`` with ``images[].url``; ``cancel_url`` to stop it."""

    def __init__(self, http: Http) -> None:
        self.http = http

    async def generate(
        self, template: ModelTemplate, data: dict[str, Any], progress: OnProgress
    ) -> list[Image]:
        assert template.provider is not None
        model = self.http.config.model or template.provider.model
        submitted = await self.http.call(
            "POST", self.http.url(model), json=provider_input(template, data)
        )
        handle = submitted.json()
        try:
            result = await self._wait(handle, progress)
        except asyncio.CancelledError:
            if handle.get("cancel_url"):
                try:
                    await asyncio.shield(self.http.call("PUT", handle["cancel_url"]))
                except Exception:
                    log.warning("provider cancel failed", exc_info=True)
            raise
        images = [await self.http.fetch(item["url"]) for item in result.get("images", [])]
        if not images:
            raise ProviderError(
                f"{self.http.name} returned no image", code=ErrorCode.PROVIDER_ERROR
            )
        return images

    async def _wait(self, handle: dict[str, Any], progress: OnProgress) -> dict[str, Any]:
        polls = 0
        while True:
            status = (await self.http.call("GET", handle["status_url"])).json()
            state = status.get("status")
            if state == "COMPLETED":
                if status.get("error"):
                    raise ProviderError(
                        f"{self.http.name}: {status['error']}", code=ErrorCode.PROVIDER_ERROR
                    )
                await progress(100.0)
                return dict((await self.http.call("GET", handle["response_url"])).json())
            if state not in ("IN_QUEUE", "IN_PROGRESS"):
                raise ProviderError(
                    f"{self.http.name}: request {state}", code=ErrorCode.PROVIDER_ERROR
                )
            if state == "IN_PROGRESS":
                polls += 1
                await progress(min(95.0, float(status.get("progress", 0)) or 10.0 * polls))
            await asyncio.sleep(self.http.config.poll_interval_s)


Client = OpenAIImages | QueueApi


def make_client(name: str, style: str, config: ProviderConfig, http: httpx.AsyncClient) -> Client:
    """The client for a provider's API style."""
    if style == "openai-images":
        return OpenAIImages(Http(name, config, http, "Bearer"))
    return QueueApi(Http(name, config, http, "Key"))
