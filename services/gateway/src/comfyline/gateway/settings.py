"""The gateway's settings: one class, read from ``GATEWAY_*`` (nested blocks with ``__``).

Built once in ``main()`` (or by a test) and passed to :func:`comfyline.gateway.create_app`.
Outside development the gateway refuses to start with no way to authenticate callers, or with a
placeholder or short secret, as the full-stack template refuses ``changethis``.
"""

from __future__ import annotations

import secrets

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from comfyline.runtime import ServiceSettings, UrlPolicySettings
from comfyline.runtime.settings import check_secret

MIN_SECRET_CHARS = 32


class AuthSettings(BaseModel):
    """How callers prove who they are: API keys (the ``keys`` bucket) and/or JWT bearer tokens."""

    api_keys: bool = Field(default=True, description="accept API keys from the keys bucket")
    admin_api_key: SecretStr | None = Field(
        default=None, description="a bootstrap admin key (not stored), e.g. for the local stack"
    )
    admin_owner: str = Field(default="admin", description="the owner id of the bootstrap key")
    jwt_secret: SecretStr | None = Field(default=None, description="HS256 shared secret")
    jwks_url: str | None = Field(
        default=None,
        description="JWKS URL, e.g. https://<project>.supabase.co/auth/v1/.well-known/jwks.json",
    )
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    role_claim: str = Field(default="role", description="dotted path of the role claim")
    admin_roles: list[str] = Field(default_factory=lambda: ["admin"])
    tier_claim: str = Field(default="content_tier", description="dotted path of the tier claim")
    jwks_cache_s: float = Field(default=300, gt=0)

    @property
    def jwt_enabled(self) -> bool:
        """True when bearer tokens that are not API keys can be checked."""
        return self.jwt_secret is not None or self.jwks_url is not None


class LimitSettings(BaseModel):
    """Default limits per owner; an API key's ``limits`` override any of them."""

    window_s: int = Field(default=60, ge=1, description="rate-limit window")
    submit_per_min: int = Field(default=10, ge=0)
    enhance_per_min: int = Field(default=30, ge=0)
    status_per_min: int = Field(default=60, ge=0)
    upload_per_min: int = Field(default=30, ge=0)
    keys_per_min: int = Field(default=30, ge=0)
    active_jobs: int = Field(default=10, ge=0, description="concurrent queued or running jobs")
    spend_per_day: float | None = Field(default=None, ge=0, description="USD; None: unlimited")
    spend_per_month: float | None = Field(default=None, ge=0, description="USD; None: unlimited")


class BodySettings(BaseModel):
    """Request body and output size limits, in bytes."""

    max_json_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_fetch_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_b64_bytes: int = Field(default=4 * 1024 * 1024, ge=0, description="b64_json inline cap")


class OpenAISettings(BaseModel):
    """The OpenAI-compatible routes: which catalogue model serves each, how long they wait.

    A request naming one of OpenAI's own models (``dall-e-3``, ``gpt-image-1``, ``tts-1``, ...)
    or none gets the default here; a catalogue model's name is used as it is."""

    image_model: str = Field(default="txt2img-sdxl", description="/v1/images/generations")
    edit_model: str = Field(default="inpaint-sdxl", description="/v1/images/edits")
    speech_model: str = Field(default="tts", description="/v1/audio/speech")
    wait_s: float = Field(default=600, gt=0, description="how long a request waits for its job")


class Settings(ServiceSettings):
    """Everything the gateway is configured by (env prefix ``GATEWAY_``)."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_nested_delimiter="__", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = Field(
        default=None, description="base URL clients use, for links (default: the request's)"
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description='browser origins allowed to call the API, e.g. ["https://app.example.com"]',
    )
    cors_origin_regex: str | None = Field(
        default=None, description="origins matching this regex are allowed too (local stacks)"
    )
    events_token_secret: SecretStr | None = Field(
        default=None, description="signs events links; shared by every replica"
    )
    events_token_ttl_s: int = Field(default=900, ge=10)
    max_batch_jobs: int = Field(default=500, ge=1, le=1000, description="jobs per batch")
    worker_ttl_s: float = Field(
        default=15.0, gt=0, description="heartbeat age after which a worker counts as gone"
    )
    auth: AuthSettings = Field(default_factory=AuthSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    bodies: BodySettings = Field(default_factory=BodySettings)
    prefer_wait_max_s: float = Field(default=60, ge=0)
    workflow_cost_per_gpu_second: float = Field(
        default=0.0, ge=0, description="what a GPU second of a workflow job costs (usage)"
    )
    sse_heartbeat_s: float = Field(default=15, gt=0)
    sse_retry_ms: int = Field(default=2000, ge=0)
    request_timeout_s: float = Field(default=5, gt=0, description="cancel and other requests")
    enhance_timeout_s: float = Field(default=15, gt=0)
    fetch_timeout_s: float = Field(default=15, gt=0, description="fetching https input URLs")
    webhook: UrlPolicySettings = Field(
        default_factory=UrlPolicySettings,
        description="which webhook URLs are accepted; set as the orchestrator's webhook block",
    )
    status_cache_s: float = Field(default=1.0, ge=0, description="queue depth / workers cache")
    send_work: bool = Field(
        default=True,
        description="send a plain job's work with its submission when a live worker serves its "
        "model (nothing to screen, not paused): the job starts without waiting for the "
        "orchestrator to pick it up. false: the orchestrator sends every job's work",
    )
    submit_lane: bool = Field(
        default=True,
        description="answer POST /v1/jobs through the app's middlewares and error handlers "
        "without the router and FastAPI's request wrapping (only where no spans are "
        "exported); false: through FastAPI's whole stack like every other request",
    )
    files_lane: bool = Field(
        default=True,
        description="answer GET /v1/files/<token> (a fresh output's download) the same way; "
        "false: through FastAPI's whole stack",
    )

    @model_validator(mode="after")
    def _refuse_unsafe_outside_development(self) -> Settings:
        if not self.auth.api_keys and not self.auth.jwt_enabled:
            raise ValueError("no auth configured: enable api keys or set a JWT secret/JWKS URL")
        if self.environment == "development":
            if self.events_token_secret is None:
                # One process in development; replicas need a shared secret (refused below).
                self.events_token_secret = SecretStr(secrets.token_urlsafe(32))
            return self
        if self.events_token_secret is None:
            raise ValueError("events_token_secret must be set outside development")
        for name, secret in (
            ("events_token_secret", self.events_token_secret),
            ("auth.jwt_secret", self.auth.jwt_secret),
            ("auth.admin_api_key", self.auth.admin_api_key),
        ):
            if secret is None:
                continue
            value = secret.get_secret_value()
            check_secret(self.environment, name, value)
            if len(value) < MIN_SECRET_CHARS:
                raise ValueError(f"{name} must be at least {MIN_SECRET_CHARS} characters")
        return self

    def events_secret(self) -> bytes:
        """The events-token signing key (always set once validated)."""
        assert self.events_token_secret is not None
        return self.events_token_secret.get_secret_value().encode()
