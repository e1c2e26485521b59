"""Shared settings: nested environment blocks, and no placeholder S3 secret in production."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from comfyline.runtime import ServiceSettings
from comfyline.runtime.settings import check_secret, is_placeholder


class StoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STORING_", env_nested_delimiter="__")


class StorelessSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STORELESS_", env_nested_delimiter="__")
    uses_object_store: ClassVar[bool] = False


def test_nested_blocks_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORING_NATS__URL", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("STORING_S3__BUCKET", "media")
    monkeypatch.setenv("STORING_NAMESPACE", "t1")
    settings = StoringSettings()
    assert settings.nats.url == "nats://a:4222,nats://b:4222"
    assert settings.s3.bucket == "media"
    assert settings.names.work("m") == "t1.work.m"


def test_a_service_that_stores_objects_refuses_the_dev_secret_in_production() -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        StoringSettings(environment="production")
    StoringSettings(environment="production", s3={"secret_key": "a-real-secret-of-some-length"})
    StoringSettings(environment="development")


def test_a_service_without_object_storage_is_not_asked_for_an_s3_secret() -> None:
    assert StorelessSettings(environment="production").environment == "production"


@pytest.mark.parametrize("secret", ["", "change-me", "CHANGEME", "please-change-this", "dev"])
def test_one_placeholder_rule_for_every_secret(secret: str) -> None:
    assert is_placeholder(secret)
    with pytest.raises(ValueError, match=r"llm\.api_key is a placeholder"):
        check_secret("production", "llm.api_key", secret)
    with pytest.raises(ValueError, match="placeholder"):
        check_secret("test", "llm.api_key", secret)
    check_secret("development", "llm.api_key", secret)


def test_a_real_secret_or_none_passes_the_rule() -> None:
    assert not is_placeholder("k3J9-a-long-generated-secret")
    check_secret("production", "s3.secret_key", "k3J9-a-long-generated-secret")
    check_secret("production", "s3.secret_key", None)


def test_every_service_takes_a_catalogue_folder_and_a_metrics_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORELESS_CATALOGUE_DIR", "/srv/catalogue")
    monkeypatch.setenv("STORELESS_METRICS_PORT", "9090")
    settings = StorelessSettings()
    assert str(settings.catalogue_dir) == "/srv/catalogue"
    assert settings.metrics_port == 9090
    assert StoringSettings().metrics_port is None
