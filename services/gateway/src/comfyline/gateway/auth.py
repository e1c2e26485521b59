"""Who is calling: API keys, JWT bearer tokens (HS256 secret or JWKS), and events tokens.

``Authorization: Bearer <secret>`` where the secret is either an API key (``cl_...``, looked up
by its SHA-256 in the ``keys`` bucket), the bootstrap admin key, or a JWT (HS256 with the shared
secret, or RS256/ES256/EdDSA with a key from the JWKS URL, e.g. a Supabase project). The owner
is the key's owner or the JWT's ``sub``; the role and content tier come from the key record or
configurable claims.

Browsers' EventSource cannot send headers, so a job's ``events`` link carries an *events token*:
a short-lived HS256 token, signed with ``events_token_secret``, valid for one job's stream (or,
for the dashboard stream, for one owner's) and for nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import jwt

from comfyline.contracts import TIER_ORDER, ErrorCode, Priority, Tier, owner_token

from .errors import ApiError
from .keys import KEY_PREFIX, KeyStore, digest
from .settings import AuthSettings

EVENTS_AUDIENCE = "comfyline-events"
Role = Literal["user", "admin"]
Via = Literal["api_key", "admin_key", "jwt", "events_token"]


_HS256_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def hs256(claims: dict[str, Any], secret: bytes) -> str:
    """A compact HS256 JWT of ``claims``, as ``jwt.encode`` writes it (the same header, the
    same compact JSON), at a fraction of its cost: one is made for every job answered."""
    payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode())
    signed = _HS256_HEADER + b"." + payload.rstrip(b"=")
    signature = base64.urlsafe_b64encode(hmac.digest(secret, signed, "sha256")).rstrip(b"=")
    return (signed + b"." + signature).decode()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    owner_id: str
    role: Role = "user"
    via: Via = "api_key"
    key_id: str | None = None
    content_tier: Tier = "general"
    limits: dict[str, float] = field(default_factory=dict)
    events_scope: str | None = None  # events tokens: the job id, or "*" for all of the owner's
    lane: Priority | None = None  # the only job priority this caller may use (None: any)
    scopes: frozenset[str] = frozenset()  # extra rights an admin granted ("workflows")

    @property
    def owner(self) -> str:
        """The owner's subject token (``jobs.<owner>...``, storage prefixes)."""
        return owner_token(self.owner_id)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def may_run_workflows(self) -> bool:
        """Admins, and keys an admin granted the ``workflows`` scope: an arbitrary graph reads
        whatever its ComfyUI server can."""
        return self.is_admin or "workflows" in self.scopes

    def may_see(self, owner: str) -> bool:
        """True for the owner's own resources (by owner token), and for admins."""
        return self.is_admin or owner == self.owner


def unauthorized(message: str) -> ApiError:
    """401 with the challenge header."""
    return ApiError(
        401, ErrorCode.UNAUTHORIZED, message, headers={"WWW-Authenticate": 'Bearer realm="api"'}
    )


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise unauthorized("use Authorization: Bearer <API key or JWT>")
    return value.strip()


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class Authenticator:
    """Turns a bearer secret into a :class:`Principal`, or raises 401."""

    def __init__(
        self,
        settings: AuthSettings,
        keys: KeyStore,
        events_secret: bytes,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.events_secret = events_secret
        self.http = http
        admin = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
        self._admin_digest = digest(admin) if admin else None
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_at = 0.0
        self._jwks_lock = asyncio.Lock()

    async def authenticate(self, token: str | None) -> Principal:
        """The caller of a request with this bearer token."""
        if not token:
            raise unauthorized("missing credentials: send Authorization: Bearer <key>")
        if token.startswith(KEY_PREFIX):
            return await self._api_key(token)
        if self.settings.jwt_enabled and token.count(".") == 2:
            return await self._jwt(token)
        raise unauthorized("invalid credentials")

    async def _api_key(self, token: str) -> Principal:
        if self._admin_digest and hmac.compare_digest(digest(token), self._admin_digest):
            return Principal(owner_id=self.settings.admin_owner, role="admin", via="admin_key")
        if not self.settings.api_keys:
            raise unauthorized("API keys are not accepted here")
        record = await self.keys.find(token)
        if record is None:
            raise unauthorized("invalid API key")
        if record.revoked_at is not None:
            raise unauthorized("API key revoked")
        return Principal(
            owner_id=record.owner,
            role=record.role,
            via="api_key",
            key_id=record.key_id,
            content_tier=record.content_tier,
            limits=dict(record.limits),
            lane=record.lane,
            scopes=frozenset(record.scopes),
        )

    async def _jwt(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthorized("malformed token") from exc
        alg = str(header.get("alg", ""))
        key: Any
        if alg == "HS256" and self.settings.jwt_secret is not None:
            key, algorithms = self.settings.jwt_secret.get_secret_value(), ["HS256"]
        elif alg != "HS256" and self.settings.jwks_url and alg in self.settings.jwt_algorithms:
            key, algorithms = await self._jwks_key(str(header.get("kid", ""))), [alg]
        else:
            raise unauthorized(f"token algorithm {alg or 'none'} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={"require": ["exp", "sub"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthorized("token expired") from exc
        except jwt.PyJWTError as exc:
            raise unauthorized(f"invalid token: {exc}") from exc
        if claims.get("scope") == "events":
            raise unauthorized("an events token only opens its event stream")
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip() or len(subject) > 256:
            raise unauthorized("the token's subject (sub) must be a non-empty string")
        role_value = _claim(claims, self.settings.role_claim)
        roles = role_value if isinstance(role_value, list) else [role_value]
        role: Role = "admin" if any(r in self.settings.admin_roles for r in roles) else "user"
        tier = _claim(claims, self.settings.tier_claim)
        return Principal(
            owner_id=subject,
            role=role,
            via="jwt",
            content_tier=tier if tier in TIER_ORDER else "general",
        )

    async def _jwks_key(self, kid: str) -> Any:
        keyset = await self._keyset(refresh=False)
        match = next((k for k in keyset.keys if k.key_id == kid), None)
        if match is None:
            keyset = await self._keyset(refresh=True)  # a rotated key: fetch once more
            match = next((k for k in keyset.keys if k.key_id == kid), None)
        if match is None:
            raise unauthorized("token signed with an unknown key")
        return match.key

    async def _keyset(self, refresh: bool) -> jwt.PyJWKSet:
        async with self._jwks_lock:
            age = time.monotonic() - self._jwks_at
            fresh = self._jwks is not None and age < self.settings.jwks_cache_s
            # A forced refresh is allowed at most every 10 s, so bad kids cannot flood the IdP.
            if self._jwks is not None and ((fresh and not refresh) or (refresh and age < 10)):
                return self._jwks
            assert self.settings.jwks_url
            client = self.http or httpx.AsyncClient(timeout=httpx.Timeout(5.0))
            try:
                response = await client.get(self.settings.jwks_url)
                response.raise_for_status()
                self._jwks = jwt.PyJWKSet.from_dict(response.json())
                self._jwks_at = time.monotonic()
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                if self._jwks is None:
                    raise ApiError(
                        503, ErrorCode.SERVICE_UNAVAILABLE, "cannot fetch the JWKS to check tokens"
                    ) from exc
            finally:
                if client is not self.http:
                    await client.aclose()
            assert self._jwks is not None
            return self._jwks

    # --- events tokens -----------------------------------------------------------------------
    def issue_events_token(self, principal: Principal, scope: str, ttl_s: int) -> str:
        """A token that opens the event stream of job ``scope`` (or ``"*"``: all the owner's)."""
        now = int(time.time())
        claims = {
            "sub": principal.owner_id,
            "role": principal.role,
            "scope": "events",
            "job": scope,
            "aud": EVENTS_AUDIENCE,
            "iat": now,
            "exp": now + ttl_s,
        }
        return hs256(claims, self.events_secret)

    def verify_events_token(self, token: str) -> Principal:
        """The principal an events token stands for (401 when invalid or expired)."""
        try:
            claims = jwt.decode(
                token,
                self.events_secret,
                algorithms=["HS256"],
                audience=EVENTS_AUDIENCE,
                options={"require": ["exp", "sub", "job"]},
            )
        except jwt.PyJWTError as exc:
            raise unauthorized(f"invalid events token: {exc}") from exc
        if claims.get("scope") != "events":
            raise unauthorized("not an events token")
        return Principal(
            owner_id=str(claims["sub"]),
            role="admin" if claims.get("role") == "admin" else "user",
            via="events_token",
            events_scope=str(claims["job"]),
        )
