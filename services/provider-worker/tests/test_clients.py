"""The provider clients' rules, without a network: Retry-After, the shared gate, image sizes."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from comfyline.provider import Gate, ProviderConfig, Settings
from comfyline.provider.clients import image_size, retry_after
from comfyline.testkit.providers import png


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after(httpx.Response(429, headers={"Retry-After": "2.5"})) == 2.5
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    from_date = retry_after(httpx.Response(429, headers={"Retry-After": later}))
    assert from_date is not None and 25 < from_date <= 30
    assert retry_after(httpx.Response(503)) is None


def test_the_gate_holds_every_caller_until_the_latest_pause() -> None:
    gate = Gate()
    assert not gate.holding
    gate.hold(10)
    gate.hold(1)  # a shorter pause never cuts a longer one short
    assert gate.holding and gate.until - time.monotonic() > 9


def test_image_size_reads_a_png_header() -> None:
    assert image_size(png(40, 30, "x")) == (40, 30)
    assert image_size(b"GIF89a") == (None, None)


def test_providers_are_configured_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PROVIDER_PROVIDERS",
        '{"openai": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sekrit-xyz", '
        '"max_retries": 1}}',
    )
    settings = Settings()
    config = settings.providers["openai"]
    assert isinstance(config, ProviderConfig) and config.max_retries == 1
    assert config.api_key is not None and "sekrit-xyz" not in repr(config)
