"""What ``comfyline up`` hands each service is what that service reads, and secrets stay private."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from comfyline.gateway.settings import Settings as GatewaySettings
from comfyline.orchestrator.settings import Settings as OrchestratorSettings
from comfyline.stack.local import Credentials, LocalStack, write_private


def _env(tmp_path: Path, name: str) -> dict[str, str]:
    stack = LocalStack(tmp_path)
    stack.nats = cast(Any, SimpleNamespace(url="nats://127.0.0.1:4222"))
    stack.s3 = cast(Any, SimpleNamespace(endpoint="http://127.0.0.1:9000"))
    creds = Credentials.load_or_create(tmp_path / "credentials.json")
    return stack._service_env(name, creds, "http://127.0.0.1:8188", "http://127.0.0.1:8000")


@pytest.mark.parametrize(
    ("name", "settings_class"),
    [("gateway", GatewaySettings), ("orchestrator", OrchestratorSettings)],
)
def test_webhooks_to_this_machine_work_under_the_local_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, settings_class: type[Any]
) -> None:
    env = _env(tmp_path, name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = settings_class()
    assert settings.webhook.allow_loopback is True and settings.webhook.allow_http is True
    # Every variable the stack sets names a setting the service has (no silent typo).
    prefix = f"{name.upper()}_"
    fields = set(settings_class.model_fields)
    for key in env:
        assert key.startswith(prefix), key
        assert key[len(prefix) :].split("__")[0].lower() in fields, key


def test_files_holding_secrets_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    Credentials.load_or_create(tmp_path / "credentials.json")
    write_private(tmp_path / "stack.json", "{}")
    for name in ("credentials.json", "stack.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
