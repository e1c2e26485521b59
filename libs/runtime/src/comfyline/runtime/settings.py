"""Settings blocks shared by every service.

Each service has one Settings class (pydantic-settings) with its own prefix (``GATEWAY_``,
``ORCHESTRATOR_``, ``WORKER_``, ``ENHANCER_``) and these nested blocks, read with ``__`` between
levels: ``WORKER_NATS__URL``, ``GATEWAY_S3__ENDPOINT``. Settings are built once in ``main()`` and
passed down; libraries never read the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from comfyline.contracts import Names

PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "dev", "devsecret", "comfyline-dev-secret"}
)


class NatsSettings(BaseModel):
    """Where NATS is and how the streams are replicated."""

    url: str = Field(
        default="nats://127.0.0.1:4222", description="one URL, or several comma-separated"
    )
    replicas: int = Field(default=1, ge=1, le=5)
    connect_timeout_s: float = 5.0
    connect_attempts: int = 30
    request_timeout_s: float = 5.0
    publish_retry_s: float = Field(
        default=15.0,
        ge=0,
        description="how long a publish no stream answers is tried again (a stream electing "
        "its leader after a NATS node is lost takes a few seconds)",
    )


class S3Settings(BaseModel):
    """An S3-compatible store: the internal endpoint, and the one clients reach for links."""

    endpoint: str = "127.0.0.1:9000"
    public_endpoint: str | None = Field(
        default=None, description="host:port clients use for presigned links (default: endpoint)"
    )
    secure: bool = False
    public_secure: bool | None = None
    access_key: str = "comfyline"
    secret_key: str = "comfyline-dev-secret"
    region: str = "us-east-1"
    bucket: str = "comfyline"
    link_expiry_s: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    part_size: int = Field(default=5 * 1024 * 1024, ge=5 * 1024 * 1024)


class UrlPolicySettings(BaseModel):
    """Which targets the SSRF guard lets a user's URL reach (see ``comfyline.runtime.ssrf``).

    The gateway (when it accepts a webhook URL) and the orchestrator (when it sends) read the
    same block, ``GATEWAY_WEBHOOK__*`` and ``ORCHESTRATOR_WEBHOOK__*``, so both judge alike.
    """

    allow_loopback: bool = Field(
        default=False, description="let URLs reach 127.0.0.0/8 and ::1 (tests, the local stack)"
    )
    allow_private: bool = Field(
        default=False, description="let URLs reach private networks (an internal deployment)"
    )
    allow_http: bool = Field(default=False, description="accept http:// as well as https://")


class OtelSettings(BaseModel):
    """OpenTelemetry export (OTLP over HTTP); off unless an endpoint is set."""

    endpoint: str | None = Field(default=None, description="e.g. http://127.0.0.1:4318")
    sample_ratio: float = Field(default=1.0, ge=0, le=1)


class ServiceSettings(BaseSettings):
    """The part every service's Settings shares."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    namespace: str = Field(default="", description="prefix for every subject/stream (tests)")
    log_level: str = "INFO"
    log_json: bool = True
    nats: NatsSettings = Field(default_factory=NatsSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    shutdown_grace_s: float = 30.0
    models_refresh_s: float = Field(
        default=10.0, gt=0, description="how often the models bucket is re-read"
    )
    catalogue_dir: Path | None = Field(
        default=None, description="a folder of model JSON files (default: the built-in catalogue)"
    )
    metrics_host: str = Field(default="0.0.0.0", description="where /metrics is served")
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="serve /metrics, /healthz and /readyz on this port (unset: not served)",
    )

    @property
    def names(self) -> Names:
        """Subject and resource names in this service's namespace."""
        return Names(self.namespace)

    #: Whether the service talks to S3 (only then is its S3 secret checked in production).
    uses_object_store: ClassVar[bool] = True

    @model_validator(mode="after")
    def _refuse_placeholders_outside_development(self) -> ServiceSettings:
        if self.uses_object_store:
            check_secret(self.environment, "s3.secret_key", self.s3.secret_key)
        return self


def is_placeholder(secret: str) -> bool:
    """Whether ``secret`` is a stand-in (empty, a well-known word, or asks to be changed)."""
    value = secret.strip().lower()
    return value in PLACEHOLDER_SECRETS or "change" in value


def check_secret(environment: str, name: str, secret: str | None) -> None:
    """The one placeholder-secret rule of every service: outside development a secret that is
    set must be real (``ValueError`` naming the setting otherwise)."""
    if environment == "development" or secret is None:
        return
    if is_placeholder(secret):
        raise ValueError(f"{name} is a placeholder; set a real secret outside development")
