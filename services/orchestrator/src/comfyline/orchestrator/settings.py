"""The orchestrator's settings: one class, read from ``ORCHESTRATOR_*`` (nested blocks with ``__``).

Built once in ``main()`` (or by a test) and passed to the
:class:`~comfyline.orchestrator.Orchestrator`. Examples: ``ORCHESTRATOR_NATS__URL``,
``ORCHESTRATOR_NAMESPACE``, ``ORCHESTRATOR_ENHANCE_TIMEOUT_S``,
``ORCHESTRATOR_WEBHOOK__ALLOW_LOOPBACK``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from comfyline.contracts import Retention
from comfyline.runtime import ServiceSettings, UrlPolicySettings


class WebhookSettings(UrlPolicySettings):
    """How webhooks are sent: timeouts, retries, and which targets the SSRF guard lets through."""

    timeout_s: float = Field(default=10.0, gt=0, description="read/write timeout of one POST")
    connect_timeout_s: float = Field(default=3.0, gt=0)
    dns_timeout_s: float = Field(default=3.0, gt=0)
    backoff_s: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0],
        description="delay before each retry; attempts = len(backoff_s) + 1",
    )
    default_secret: str | None = Field(
        default=None,
        description="whsec_ secret for owners without their own (None: their deliveries fail)",
    )
    keep_deliveries: int = Field(default=50, ge=1, description="delivery records kept on a job")

    @property
    def max_attempts(self) -> int:
        """How many times one event is tried in all."""
        return len(self.backoff_s) + 1


class Settings(ServiceSettings):
    """Everything ``python -m comfyline.orchestrator`` reads (prefix ``ORCHESTRATOR_``)."""

    model_config = SettingsConfigDict(
        env_prefix="ORCHESTRATOR_", env_nested_delimiter="__", extra="ignore"
    )
    uses_object_store: ClassVar[bool] = False

    publish_catalogue: bool = Field(default=True, description="write it to the models bucket")
    jobs_days: float = Field(default=30, gt=0, description="JOBS max age and job record TTL")
    runs_days: float = Field(default=7, gt=0, description="RUNS and WORK max age")

    ack_wait_s: float = Field(default=30.0, gt=0, description="AckWait of our durable consumers")
    fetch_timeout_s: float = Field(
        default=1.0, gt=0, description="longest idle pull; also how long a stop may wait for one"
    )
    submissions_concurrency: int = Field(default=64, ge=1)
    runs_concurrency: int = Field(default=32, ge=1)
    timers_concurrency: int = Field(default=32, ge=1)
    submissions_max_pending: int = Field(
        default=10_000, ge=1, description="queued submissions held while no worker is live"
    )
    timers_max_pending: int = Field(default=100_000, ge=1, description="armed timers at once")
    sweep_interval_s: float = Field(
        default=15.0, gt=0, description="how often live jobs are checked against their deadlines"
    )
    sweep_grace_s: float = Field(
        default=2.0, ge=0, description="how long past a deadline the sweep leaves it to its timer"
    )

    policy_timeout_s: float = Field(default=2.0, gt=0, description="one policy.v1 request")
    policy_attempts: int = Field(default=3, ge=1, description="then the job fails closed")
    policy_backoff_s: float = Field(default=0.5, ge=0, description="first pause between tries")
    enhance_timeout_s: float = Field(default=5.0, gt=0, description="then the prompt is kept")

    require_live_worker: bool = Field(
        default=True, description="keep jobs queued until a worker for their model heartbeats"
    )
    worker_ttl_s: float = Field(default=15.0, gt=0, description="heartbeat age that counts as live")
    no_worker_recheck_s: float = Field(default=2.0, gt=0, description="longest re-check pause")
    progress_min_interval_s: float = Field(
        default=0.25, ge=0, description="progress republished on JOBS at most this often per job"
    )
    cas_attempts: int = Field(default=25, ge=1, description="compare-and-set tries per change")

    webhook: WebhookSettings = Field(default_factory=WebhookSettings)

    @property
    def retention(self) -> Retention:
        """How long streams and records keep job data."""
        return Retention(jobs_days=self.jobs_days, runs_days=self.runs_days)

    @model_validator(mode="after")
    def _real_secrets_in_production(self) -> Settings:
        secret = self.webhook.default_secret
        if self.environment == "production" and secret is not None and len(secret) < 32:
            raise ValueError("webhook.default_secret is too short for production")
        if self.environment == "production" and self.webhook.allow_loopback:
            raise ValueError("webhook.allow_loopback is for tests and the local stack only")
        return self
