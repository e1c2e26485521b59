"""Small pieces: settings refusals, events tokens, Prefer parsing, the exported names."""

from __future__ import annotations

import time

import jwt
import pytest
from pydantic import SecretStr, ValidationError

import comfyline.gateway
from comfyline.gateway.auth import Authenticator, Principal, hs256
from comfyline.gateway.errors import ApiError
from comfyline.gateway.keys import KeyStore
from comfyline.gateway.routes.jobs import prefer_wait
from comfyline.gateway.settings import AuthSettings, Settings

STRONG = "x" * 40


def test_exported_members() -> None:
    assert comfyline.gateway.__all__ == ["Settings", "create_app"]
    for name in comfyline.gateway.__all__:
        assert hasattr(comfyline.gateway, name)


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9123")
    monkeypatch.setenv("GATEWAY_LIMITS__SUBMIT_PER_MIN", "77")
    monkeypatch.setenv("GATEWAY_AUTH__JWKS_URL", "https://idp.example.com/jwks.json")
    monkeypatch.setenv("GATEWAY_CORS_ORIGINS", '["https://app.example.com"]')
    settings = Settings()
    assert settings.port == 9123 and settings.limits.submit_per_min == 77
    assert settings.auth.jwt_enabled and settings.cors_origins == ["https://app.example.com"]
    assert settings.events_token_secret is not None  # development makes one up


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # no events token secret
        {"events_token_secret": "changeme"},
        {"events_token_secret": "short-secret"},
        {"events_token_secret": STRONG, "auth": AuthSettings(jwt_secret=SecretStr("secret"))},
        {
            "events_token_secret": STRONG,
            "auth": AuthSettings(admin_api_key=SecretStr("change-me-please-" * 3)),
        },
    ],
)
def test_production_refuses_placeholders(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(environment="production", s3={"secret_key": STRONG}, **overrides)  # type: ignore[arg-type]


def test_no_auth_at_all_is_refused_everywhere() -> None:
    with pytest.raises(ValidationError, match="no auth configured"):
        Settings(auth=AuthSettings(api_keys=False))
    ok = Settings(environment="production", s3={"secret_key": STRONG}, events_token_secret=STRONG)
    assert ok.auth.api_keys


def test_events_tokens_are_scoped_and_expire() -> None:
    auth = Authenticator(AuthSettings(), KeyStore(None), b"k" * 32)  # type: ignore[arg-type]
    user = Principal(owner_id="alice", role="user")
    token = auth.issue_events_token(user, "job_1", 60)
    seen = auth.verify_events_token(token)
    assert (seen.owner_id, seen.via, seen.events_scope, seen.role) == (
        "alice",
        "events_token",
        "job_1",
        "user",
    )
    expired = jwt.encode(
        {
            "sub": "alice",
            "job": "job_1",
            "scope": "events",
            "aud": "comfyline-events",
            "exp": int(time.time()) - 5,
        },
        b"k" * 32,
        algorithm="HS256",
    )
    with pytest.raises(ApiError):
        auth.verify_events_token(expired)
    with pytest.raises(ApiError):
        Authenticator(AuthSettings(), KeyStore(None), b"other" * 8).verify_events_token(token)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("wait=5", 5.0),
        ("respond-async, wait=100", 30.0),
        ("WAIT = 0", 0.0),
        ("waiting=3", None),
    ],
)
def test_prefer_wait(header: str | None, expected: float | None) -> None:
    assert prefer_wait(header, 30) == expected


async def test_nats_errors_lets_a_lost_compare_and_set_through() -> None:
    from nats.js.errors import KeyWrongLastSequenceError
    from nats.js.errors import ServiceUnavailableError as JsUnavailable

    from comfyline.gateway.kv import nats_errors
    from comfyline.runtime import BusError

    with pytest.raises(KeyWrongLastSequenceError):  # an outcome: the caller reads again
        async with nats_errors("writing"):
            raise KeyWrongLastSequenceError()
    with pytest.raises(BusError):  # a failure: 503
        async with nats_errors("writing"):
            raise JsUnavailable()


def test_events_tokens_are_the_jwts_the_jwt_library_writes() -> None:
    secret = b"events-test-secret-0123456789abcdef0123456"
    for owner in ("alice", "ünïcødé@example.com", 'quote"and\\slash'):
        claims = {"sub": owner, "role": "user", "scope": "events", "job": "01HZX", "iat": 7}
        token = hs256(claims, secret)
        assert token == jwt.encode(claims, secret, algorithm="HS256")
        assert jwt.decode(token, secret, algorithms=["HS256"]) == claims
