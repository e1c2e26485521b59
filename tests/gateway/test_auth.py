"""Authentication and keys: API keys, JWT (HS256 and JWKS), roles, revocation, the CLI."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from comfyline.gateway.auth import Authenticator
from comfyline.gateway.cli import main as cli_main
from comfyline.gateway.errors import ApiError
from comfyline.gateway.keys import KeyStore, digest
from comfyline.gateway.settings import AuthSettings
from comfyline.runtime import Bus, NatsSettings

from .conftest import ADMIN, JWT_SECRET, new_key


def hs256(claims: dict[str, Any], secret: str = JWT_SECRET) -> dict[str, str]:
    token = jwt.encode({"exp": int(time.time()) + 60, **claims}, secret, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def test_missing_bad_and_malformed_credentials_are_401_in_the_envelope(
    client: httpx.AsyncClient,
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer cl_not-a-real-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer a.b.c"},
        {"Authorization": "Bearer"},
    ):
        response = await client.get("/v1/jobs", headers=headers)
        assert response.status_code == 401, (headers, response.text)
        body = response.json()
        assert body["code"] == "unauthorized" and body["request_id"].startswith("req_")
        assert response.headers["x-request-id"] == body["request_id"]
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_keys_are_stored_hashed_and_a_revoked_key_stops_working(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    created = await client.post("/v1/keys", json={"owner": "carol", "name": "ci"}, headers=ADMIN)
    assert created.status_code == 201
    secret = created.json()["secret"]
    key_id = created.json()["key"]["key_id"]
    assert secret.startswith("cl_") and len(secret) > 40
    kv = await bus.kv(bus.names.bucket("keys"))
    stored = await kv.get(digest(secret))  # stored under the digest, never the secret
    assert stored.value is not None and secret.encode() not in stored.value
    carol = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/v1/jobs", headers=carol)).status_code == 200
    revoked = await client.delete(f"/v1/keys/{key_id}", headers=carol)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    after = await client.get("/v1/jobs", headers=carol)
    assert after.status_code == 401 and after.json()["error"] == "API key revoked"


async def test_users_manage_their_own_keys_admins_anyones(client: httpx.AsyncClient) -> None:
    dave = await new_key(client, "dave")
    erin = await new_key(client, "erin")
    mine = await client.post("/v1/keys", json={"name": "second"}, headers=dave)
    assert mine.status_code == 201 and mine.json()["key"]["owner"] == "dave"
    for body in ({"role": "admin"}, {"owner": "erin"}, {"limits": {"submit_per_min": 1e6}}):
        refused = await client.post("/v1/keys", json=body, headers=dave)
        assert refused.status_code == 403, body
    assert (
        await client.post("/v1/keys", json={"limits": {"bogus": 1}}, headers=ADMIN)
    ).status_code == 422
    listed = (await client.get("/v1/keys", headers=dave)).json()["data"]
    assert {k["name"] for k in listed} == {"dave-key", "second"}
    erins = (await client.get("/v1/keys", params={"owner": "erin"}, headers=ADMIN)).json()["data"]
    assert [k["owner"] for k in erins] == ["erin"]
    assert (await client.get("/v1/keys", params={"owner": "erin"}, headers=dave)).status_code == 403
    # revoking another owner's key answers 404 for a user; an admin may
    erin_key = erins[0]["key_id"]
    assert (await client.delete(f"/v1/keys/{erin_key}", headers=dave)).status_code == 404
    assert (await client.delete(f"/v1/keys/{erin_key}", headers=ADMIN)).status_code == 200
    assert (await client.get("/v1/jobs", headers=erin)).status_code == 401
    assert (await client.delete("/v1/keys/key_nope", headers=ADMIN)).status_code == 404


async def test_webhook_secret_is_shown_once_and_rotates(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    frank = await new_key(client, "frank")
    assert (await client.get("/v1/keys/webhook-secret", headers=frank)).json() == {
        "exists": False,
        "created_at": None,
    }
    first = (await client.post("/v1/keys/webhook-secret", headers=frank)).json()
    second = (await client.post("/v1/keys/webhook-secret", headers=frank)).json()
    assert first["secret"].startswith("whsec_") and first["secret"] != second["secret"]
    info = (await client.get("/v1/keys/webhook-secret", headers=frank)).json()
    assert info["exists"] and "secret" not in info
    stored = await KeyStore(await bus.kv(bus.names.bucket("keys"))).webhook_secret("frank")
    assert stored is not None and stored.secret == second["secret"]  # what the orchestrator reads


async def test_jwt_hs256_owner_role_and_expiry(client: httpx.AsyncClient) -> None:
    user = hs256({"sub": "user-uuid-1", "role": "authenticated"})
    mine = await client.get("/v1/jobs", headers=user)
    assert mine.status_code == 200
    admin = hs256({"sub": "ops", "role": "admin"})
    assert (await client.get("/v1/keys", params={"owner": "*"}, headers=admin)).status_code == 200
    assert (await client.get("/v1/keys", params={"owner": "x"}, headers=user)).status_code == 403
    expired = hs256({"sub": "u", "exp": int(time.time()) - 60})
    response = await client.get("/v1/jobs", headers=expired)
    assert response.status_code == 401 and response.json()["error"] == "token expired"
    assert (
        await client.get("/v1/jobs", headers=hs256({"sub": "u"}, "another-secret-" * 3))
    ).status_code == 401
    assert (
        await client.get("/v1/jobs", headers=hs256({"role": "admin"}))
    ).status_code == 401  # no sub
    unsigned = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, key="", algorithm="none")
    assert (
        await client.get("/v1/jobs", headers={"Authorization": f"Bearer {unsigned}"})
    ).status_code == 401


async def test_jwks_tokens_are_checked_with_the_published_key() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    fetches = 0

    def jwks(request: httpx.Request) -> httpx.Response:
        nonlocal fetches
        fetches += 1
        return httpx.Response(
            200, json={"keys": [{**public, "kid": "k1", "alg": "RS256", "use": "sig"}]}
        )

    settings = AuthSettings(
        jwks_url="https://project.supabase.co/auth/v1/.well-known/jwks.json",
        jwt_audience="authenticated",
        role_claim="app_metadata.role",
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(jwks)) as http:
        auth = Authenticator(settings, KeyStore(None), b"x" * 32, http)  # type: ignore[arg-type]

        def token(claims: dict[str, Any], kid: str = "k1") -> str:
            body = {"exp": int(time.time()) + 60, "aud": "authenticated", **claims}
            return jwt.encode(body, private, algorithm="RS256", headers={"kid": kid})

        user = await auth.authenticate(token({"sub": "abc", "app_metadata": {"role": "admin"}}))
        assert user.owner_id == "abc" and user.role == "admin" and user.via == "jwt"
        assert (await auth.authenticate(token({"sub": "def"}))).role == "user"
        assert fetches == 1  # cached
        with pytest.raises(ApiError) as wrong_aud:
            await auth.authenticate(token({"sub": "abc", "aud": "other"}))
        assert wrong_aud.value.status == 401
        with pytest.raises(ApiError):
            await auth.authenticate(token({"sub": "abc"}, kid="unknown"))
        with pytest.raises(ApiError):  # HS256 is refused when only a JWKS is configured
            await auth.authenticate(
                jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "s" * 32, "HS256")
            )


async def test_cli_creates_a_key_that_the_api_accepts(
    client: httpx.AsyncClient,
    namespace: str,
    nats_settings: NatsSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("comfyline.gateway.cli.setup_logging", lambda *a, **k: None)
    monkeypatch.setenv("GATEWAY_NAMESPACE", namespace)
    monkeypatch.setenv("GATEWAY_NATS__URL", nats_settings.url)
    argv = ["keys", "create", "--owner", "gina", "--role", "admin", "--limit", "submit_per_min=99"]
    assert await asyncio.to_thread(cli_main, argv) == 0
    printed = json.loads(capsys.readouterr().out)
    gina = {"Authorization": f"Bearer {printed['secret']}"}
    response = await client.post("/v1/jobs", json={"model": "cpu-smoke", "input": {}}, headers=gina)
    assert response.status_code == 202 and response.headers["ratelimit-limit"] == "99"
    assert (await client.get("/v1/keys", params={"owner": "*"}, headers=gina)).status_code == 200
    assert await asyncio.to_thread(cli_main, ["keys", "revoke", printed["key_id"]]) == 0
    assert (await client.get("/v1/jobs", headers=gina)).status_code == 401


async def test_a_jwt_must_name_a_non_empty_subject(client: httpx.AsyncClient) -> None:
    for sub in ("", "   ", 42, ["alice"]):
        answer = await client.get("/v1/jobs", headers=hs256({"sub": sub}))
        assert answer.status_code == 401, (sub, answer.text)
        assert answer.json()["code"] == "unauthorized"
    assert (await client.get("/v1/jobs", headers=hs256({"sub": "alice"}))).status_code == 200
