"""Settings come from ``ORCHESTRATOR_*`` with nested blocks read through ``__``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from comfyline.orchestrator import Settings


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefix, nested NATS and webhook blocks, and lists as JSON."""
    monkeypatch.setenv("ORCHESTRATOR_NATS__URL", "nats://nats.internal:4222")
    monkeypatch.setenv("ORCHESTRATOR_NAMESPACE", "t1")
    monkeypatch.setenv("ORCHESTRATOR_ENHANCE_TIMEOUT_S", "1.5")
    monkeypatch.setenv("ORCHESTRATOR_WEBHOOK__ALLOW_LOOPBACK", "true")
    monkeypatch.setenv("ORCHESTRATOR_WEBHOOK__BACKOFF_S", "[1, 2, 3]")
    settings = Settings()
    assert settings.nats.url == "nats://nats.internal:4222"
    assert settings.names.namespace == "t1"
    assert settings.enhance_timeout_s == 1.5
    assert settings.webhook.allow_loopback is True
    assert settings.webhook.max_attempts == 4
    assert settings.retention.jobs_days == 30


def test_production_refuses_test_only_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback webhooks and short secrets are for development only."""
    monkeypatch.setenv("ORCHESTRATOR_ENVIRONMENT", "production")
    monkeypatch.setenv("ORCHESTRATOR_S3__SECRET_KEY", "a-real-secret-from-the-vault-0123456789")
    monkeypatch.setenv("ORCHESTRATOR_WEBHOOK__ALLOW_LOOPBACK", "true")
    with pytest.raises(ValidationError, match="allow_loopback"):
        Settings()
    monkeypatch.delenv("ORCHESTRATOR_WEBHOOK__ALLOW_LOOPBACK")
    monkeypatch.setenv("ORCHESTRATOR_WEBHOOK__DEFAULT_SECRET", "whsec_short")
    with pytest.raises(ValidationError, match="too short"):
        Settings()
