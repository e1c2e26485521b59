"""The provider worker's settings: which hosted providers it reaches, and how it paces them.

Read once in ``main()`` from ``PROVIDER_*`` variables. Providers are a JSON object by name::

    PROVIDER_PROVIDERS='{"openai": {"base_url": "https://api.example.com/v1", "api_key": "..."},
                         "queue": {"base_url": "https://queue.example.com", "api_key": "..."}}'

A catalogue model with ``provider: {"provider": "openai", ...}`` is served while ``openai`` is
configured here. The key never leaves this process (it is not logged, nor put in events).
"""

from __future__ import annotations

import os
import re
import socket

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from comfyline.runtime import ServiceSettings


def default_worker_id() -> str:
    """``provider-<hostname>-<pid>``, reduced to characters that are safe in a KV key."""
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname()).strip("-") or "host"
    return f"provider-{host[:40]}-{os.getpid()}"


class ProviderConfig(BaseModel):
    """One hosted provider: where it is, its key, and how hard it may be pushed."""

    base_url: str = Field(description="e.g. https://api.example.com/v1 (no trailing slash needed)")
    api_key: SecretStr | None = None
    model: str | None = Field(
        default=None, description="the provider's model name, overriding the catalogue's"
    )
    concurrency: int = Field(default=4, ge=1, description="jobs in flight at once")
    timeout_s: float = Field(default=120.0, gt=0, description="one HTTP request")
    max_retries: int = Field(default=3, ge=0, description="per request, on 429 / 5xx / no answer")
    retry_base_s: float = Field(
        default=1.0, gt=0, description="first pause when the provider gives no Retry-After"
    )
    max_retry_after_s: float = Field(
        default=60.0, gt=0, description="a longer Retry-After fails the job at once"
    )
    poll_interval_s: float = Field(default=1.0, gt=0, description="queue style: status polls")


class Settings(ServiceSettings):
    """Everything ``python -m comfyline.provider`` needs (prefix ``PROVIDER_``)."""

    model_config = SettingsConfigDict(
        env_prefix="PROVIDER_", env_nested_delimiter="__", extra="ignore"
    )

    worker_id: str = Field(default_factory=default_worker_id, pattern=r"^[A-Za-z0-9_-]{1,128}$")
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    ack_wait_s: float = Field(default=30.0, gt=0, description="JetStream AckWait of work")
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    health_interval_s: float = Field(default=10.0, gt=0, description="provider reachability")
    progress_interval_s: float = Field(default=0.5, ge=0)
    fetch_timeout_s: float = Field(default=1.0, gt=0)
