"""Webhooks: a job's events POSTed to its URL, signed per the Standard Webhooks spec.

Each event a job's :class:`~comfyline.contracts.WebhookSpec` asks for becomes a durable ``webhook``
timer (see :mod:`.timers`) carrying the exact body, so every retry sends the same bytes under the
same ``webhook-id``. When the timer fires the body is signed with the owner's secret (the gateway
keeps it in the ``keys`` bucket under ``webhook.<owner>``), sent through the SSRF guard, and the
attempt is recorded on the job (``webhook_deliveries``); a failure arms the next attempt after the
configured backoff. Delivery is at least once: receivers deduplicate by ``webhook-id``.

Headers (https://www.standardwebhooks.com): ``webhook-id``, ``webhook-timestamp`` (Unix seconds
of this attempt) and ``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(secret,
"<id>.<timestamp>.<body>")), where the secret is the base64 part of ``whsec_...``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from datetime import timedelta

import httpx
from nats.js.errors import KeyNotFoundError

from comfyline.contracts import (
    EVENT_NAMES,
    EventKind,
    JobEvent,
    JobRecord,
    Timer,
    WebhookDelivery,
    WebhookSecret,
    WebhookSpec,
    owner_token,
    utcnow,
    webhook_secret_key,
)
from comfyline.runtime import Bus
from comfyline.runtime.metrics import WEBHOOK_DELIVERIES
from comfyline.runtime.ssrf import HostUnresolved, Policy, UrlNotAllowed, resolve_target

from .records import JobStore
from .settings import WebhookSettings
from .timers import Timers
from .transitions import Verdict

log = logging.getLogger(__name__)
USER_AGENT = "Comfyline-Webhooks/1"


def wants(spec: WebhookSpec | None, kind: EventKind) -> bool:
    """True when the job's webhook asks for ``kind`` (as ``completed`` or ``job.completed``)."""
    if spec is None:
        return False
    names = {kind.value, EVENT_NAMES[kind].webhook, "*"}
    return any(name in names for name in spec.events)


def webhook_body(event: JobEvent) -> str:
    """The JSON body: ``{"type": "job.completed", "timestamp": ..., "data": <the JobEvent>}``
    (without the internal copy of the record, which holds the webhook's own settings)."""
    payload = {
        "type": EVENT_NAMES[event.kind].webhook,
        "timestamp": event.occurred_at.isoformat(),
        "data": event.model_dump(mode="json", exclude_none=True, exclude={"record"}),
    }
    return json.dumps(payload, separators=(",", ":"))


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` value for one attempt."""
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, webhook_id: str, body: str, timestamp: int) -> dict[str, str]:
    """The three Standard Webhooks headers, plus content type and user agent."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class Webhooks:
    """Schedules, signs, sends and records a job's webhooks."""

    def __init__(
        self, bus: Bus, store: JobStore, timers: Timers, settings: WebhookSettings
    ) -> None:
        self.bus = bus
        self.store = store
        self.timers = timers
        self.settings = settings
        self.policy = Policy.of(settings)
        self._http: httpx.AsyncClient | None = None

    def start(self) -> None:
        """Open the HTTP client (no redirects: a redirect could lead past the SSRF guard)."""
        timeout = httpx.Timeout(self.settings.timeout_s, connect=self.settings.connect_timeout_s)
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def schedule(self, record: JobRecord, event: JobEvent, event_msg_id: str) -> None:
        """Arm the first delivery of ``event`` if the job's webhook wants it (idempotent)."""
        if not wants(record.webhook, event.kind):
            return
        webhook_id = "wh_" + event_msg_id.replace(":", "_")
        payload = {"webhook_id": webhook_id, "event": event.kind.value, "attempt": 1}
        payload["body"] = webhook_body(event)
        await self.timers.arm("webhook", record.id, utcnow(), f"{webhook_id}:1", payload)

    async def fire(self, timer: Timer) -> None:
        """Send one attempt (unless already recorded), record it, arm the next on failure."""
        webhook_id = str(timer.payload["webhook_id"])
        attempt = int(timer.payload["attempt"])
        found = await self.store.get(timer.job_id)
        spec = found.record.webhook if found else None
        if found is None or spec is None:
            return
        record = found.record
        done = next(
            (
                d
                for d in record.webhook_deliveries
                if d.webhook_id == webhook_id and d.attempt == attempt
            ),
            None,
        )
        fresh = done is None
        if done is None:
            done = await self._send(record, spec.url, timer)
            await self._record(record.id, done)
        retryable = not done.ok and not (done.error or "").startswith("refused")
        if fresh:
            again = retryable and attempt < self.settings.max_attempts
            result = "delivered" if done.ok else "retrying" if again else "failed"
            WEBHOOK_DELIVERIES.labels(result).inc()
        if retryable and attempt < self.settings.max_attempts:
            due = utcnow() + timedelta(seconds=self.settings.backoff_s[attempt - 1])
            payload = {**timer.payload, "attempt": attempt + 1}
            await self.timers.arm("webhook", record.id, due, f"{webhook_id}:{attempt + 1}", payload)

    async def _send(self, record: JobRecord, url: str, timer: Timer) -> WebhookDelivery:
        webhook_id = str(timer.payload["webhook_id"])
        body = str(timer.payload["body"])

        def result(
            ok: bool, status: int | None = None, error: str | None = None
        ) -> WebhookDelivery:
            return WebhookDelivery(
                webhook_id=webhook_id,
                event=str(timer.payload["event"]),
                attempt=int(timer.payload["attempt"]),
                at=utcnow(),
                status_code=status,
                ok=ok,
                error=error,
            )

        secret = await self._secret(record.owner)
        if secret is None:
            return result(False, error="refused: the owner has no webhook signing secret")
        try:
            target = await resolve_target(url, self.policy, self.settings.dns_timeout_s)
        except UrlNotAllowed as exc:
            return result(False, error=f"refused: {exc.message}")
        except HostUnresolved as exc:
            return result(False, error=exc.message)
        headers = signed_headers(secret, webhook_id, body, int(utcnow().timestamp()))
        headers["host"] = target.host_header  # the checked address is in target.url
        assert self._http is not None, "Webhooks.start() was not called"
        try:
            async with self._http.stream(
                "POST",
                target.url,
                content=body.encode(),
                headers=headers,
                extensions=target.extensions,
            ) as response:
                status = response.status_code
        except httpx.HTTPError as exc:
            return result(False, error=f"{type(exc).__name__}: {exc}"[:300])
        ok = 200 <= status < 300
        return result(ok, status, None if ok else f"HTTP {status}")

    async def _record(self, job_id: str, delivery: WebhookDelivery) -> None:
        keep = self.settings.keep_deliveries

        def add(record: JobRecord) -> JobRecord | Verdict:
            if any(
                d.webhook_id == delivery.webhook_id and d.attempt == delivery.attempt
                for d in record.webhook_deliveries
            ):
                return Verdict.DROP
            deliveries = [*record.webhook_deliveries, delivery][-keep:]
            return record.model_copy(update={"webhook_deliveries": deliveries})

        await self.store.change(job_id, add)
        log.info(
            "webhook attempt",
            extra={
                "job_id": job_id,
                "webhook_id": delivery.webhook_id,
                "ok": delivery.ok,
                "attempt": delivery.attempt,
                "status_code": delivery.status_code,
            },
        )

    async def _secret(self, owner: str) -> str | None:
        kv = await self.bus.kv(self.bus.names.bucket("keys"))
        try:
            entry = await kv.get(webhook_secret_key(owner_token(owner)))
        except KeyNotFoundError:
            return self.settings.default_secret
        if not entry.value:
            return self.settings.default_secret
        return WebhookSecret.from_bytes(entry.value).secret
