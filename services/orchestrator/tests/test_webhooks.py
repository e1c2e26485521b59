"""Webhooks: Standard Webhooks signatures, retries after failures, the SSRF guard."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from comfyline.catalogue import Catalogue
from comfyline.contracts import EventKind, JobState, WebhookSecret, WebhookSpec
from comfyline.orchestrator import Orchestrator, Settings, WebhookSettings, sign, wants
from comfyline.runtime import Bus, NatsSettings
from comfyline.runtime.ssrf import Policy, UrlNotAllowed, refusal, resolve_target
from comfyline.testkit.orchestrator import (
    ScriptedWorker,
    WebhookReceiver,
    quick_settings,
    submit,
    succeed,
    until,
    wait_record,
)

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


async def give_secret(bus: Bus, owner: str, secret: str = SECRET) -> None:
    """Store an owner's webhook secret where the gateway keeps it."""
    kv = await bus.kv(bus.names.bucket("keys"))
    record = WebhookSecret(owner=owner, secret=secret, created_at=datetime.now(UTC))
    await kv.put(f"webhook.{owner}", record.to_bytes())


async def wait_requests(receiver: WebhookReceiver, n: int, timeout_s: float = 10) -> None:
    """Until the receiver has had ``n`` requests."""
    await until(lambda: len(receiver.requests) >= n, timeout_s)


async def test_webhooks_are_signed_and_retried_after_a_500(
    bus: Bus, orchestrator: Orchestrator
) -> None:
    """The 500 is retried with the same id and body; both verify with ``standardwebhooks``."""
    await give_secret(bus, "u1")
    worker = ScriptedWorker(bus, "cpu-smoke", succeed())
    await worker.start()
    async with WebhookReceiver(statuses=[500]) as receiver:
        spec = WebhookSpec(url=receiver.url, events=["started", "completed"])
        try:
            job_id = await submit(bus, "cpu-smoke", {}, webhook=spec)
            await wait_record(bus, job_id)
            await wait_requests(receiver, 3)
            record = await wait_record(bus, job_id, lambda r: len(r.webhook_deliveries) >= 3)
        finally:
            await worker.stop()

    verifier = Webhook(SECRET)
    payloads = [verifier.verify(r.body, r.headers) for r in receiver.requests]
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert {p["type"] for p in payloads} == {"job.started", "job.completed"}
    first = receiver.requests[0]
    retried = [r for r in receiver.requests[1:] if r.headers["webhook-id"] == ids[0]]
    assert len(retried) == 1 and retried[0].body == first.body  # same id, same bytes
    assert len(set(ids)) == 2
    completed = next(p for p in payloads if p["type"] == "job.completed")
    assert completed["data"]["job_id"] == job_id
    assert completed["data"]["status"] == "succeeded"

    first_id = sorted(
        (d.attempt, d.ok, d.status_code)
        for d in record.webhook_deliveries
        if d.webhook_id == ids[0]
    )
    assert first_id == [(1, False, 500), (2, True, 200)]
    other = Webhook("whsec_" + base64.b64encode(b"another secret, another owner!!").decode())
    with pytest.raises(WebhookVerificationError):
        other.verify(first.body, first.headers)


async def test_a_webhook_to_a_private_address_is_refused(
    bus: Bus, catalogue: Catalogue, nats_settings: NatsSettings, namespace: str
) -> None:
    """With loopback not allowed, nothing is sent; the refusal is recorded and not retried."""
    settings: Settings = quick_settings(
        nats_settings,
        namespace,
        webhook=WebhookSettings(backoff_s=[0.1], default_secret=SECRET, allow_http=True),
    )
    async with Orchestrator(bus, catalogue, settings), WebhookReceiver() as receiver:
        worker = ScriptedWorker(bus, "cpu-smoke", succeed())
        await worker.start()
        try:
            job_id = await submit(bus, "cpu-smoke", {}, webhook=WebhookSpec(url=receiver.url))
            record = await wait_record(bus, job_id, lambda r: len(r.webhook_deliveries) >= 1)
            await asyncio.sleep(0.5)  # a retry (backoff 0.1 s) would have been recorded by now
            record = await wait_record(bus, job_id, lambda r: True)
        finally:
            await worker.stop()

    assert receiver.requests == []
    assert record.status is JobState.SUCCEEDED
    [delivery] = record.webhook_deliveries
    assert not delivery.ok and delivery.status_code is None
    assert delivery.error is not None and "loopback" in delivery.error


def test_signature_matches_the_standard_webhooks_reference() -> None:
    """Our signature is the one the reference library computes."""
    body = json.dumps({"type": "job.completed", "data": {"x": 1}})
    ours = sign(SECRET, "wh_1", 1_700_000_000, body)
    theirs = Webhook(SECRET).sign("wh_1", datetime.fromtimestamp(1_700_000_000, UTC), body)
    assert ours == theirs


def test_event_filters_accept_kinds_and_webhook_names() -> None:
    """``completed`` and ``job.completed`` both select completion; others are not sent."""
    assert wants(WebhookSpec(url="https://x.test", events=["completed"]), EventKind.COMPLETED)
    assert wants(WebhookSpec(url="https://x.test", events=["job.started"]), EventKind.STARTED)
    assert not wants(WebhookSpec(url="https://x.test", events=["completed"]), EventKind.PROGRESS)
    assert wants(WebhookSpec(url="https://x.test"), EventKind.TIMED_OUT)  # the default set
    assert not wants(None, EventKind.COMPLETED)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback address"),
        ("::1", "loopback address"),
        ("10.1.2.3", "private address"),
        ("192.168.0.10", "private address"),
        ("172.16.5.4", "private address"),
        ("100.64.0.1", "private address"),  # carrier-grade NAT
        ("fd00::1", "private address"),
        ("100.100.100.200", "cloud metadata address"),
        ("fd00:ec2::254", "cloud metadata address"),
        ("169.254.169.254", "cloud metadata address"),
        ("::ffff:169.254.169.254", "cloud metadata address"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata address"),  # NAT64 of 169.254.169.254
        ("169.254.10.10", "link-local address"),
        ("0.0.0.0", "reserved address"),
        ("224.0.0.1", "reserved address"),
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
    ],
)
def test_the_ssrf_guard_by_address(address: str, reason: str | None) -> None:
    """Only public addresses pass by default."""
    assert refusal(ipaddress.ip_address(address), Policy()) == reason


def test_the_ssrf_guard_settings_open_loopback_and_private_only() -> None:
    """The settings open loopback and private networks, never link-local metadata."""
    open_policy = Policy(allow_loopback=True, allow_private=True)
    assert refusal(ipaddress.ip_address("127.0.0.1"), open_policy) is None
    assert refusal(ipaddress.ip_address("10.0.0.1"), open_policy) is None
    assert refusal(ipaddress.ip_address("169.254.169.254"), open_policy) is not None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.215.14/x",
        "http://localhost:8080/hook",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://user:pw@93.184.215.14/x",
        "http://[::1]/x",
        "not a url",
    ],
)
async def test_the_ssrf_guard_refuses_urls(url: str) -> None:
    """Bad schemes, loopback names, metadata names and credentials in URLs are refused."""
    with pytest.raises(UrlNotAllowed):
        await resolve_target(url, Policy())


async def test_the_ssrf_guard_pins_the_checked_address() -> None:
    """The request goes to the address that was checked, with the name in Host and SNI."""
    target = await resolve_target("https://93.184.215.14:8443/a?b=1", Policy())
    assert target.url == "https://93.184.215.14:8443/a?b=1"
    assert target.host_header == "93.184.215.14:8443"
    assert target.extensions == {"sni_hostname": "93.184.215.14"}
    loopback = Policy(allow_loopback=True, allow_http=True)
    assert str((await resolve_target("http://[::1]:9/x", loopback)).address) == "::1"
    with pytest.raises(UrlNotAllowed):
        await resolve_target("http://93.184.215.14/x", Policy(allow_http=False))


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://0x7f.1/",
        "http://127.1/",
        "http://2852039166/",  # 169.254.169.254
        "http://hooks.example.com/a\r\nX-Injected: 1",
        "http://hooks.example.com/a b",
        "http://[::ffff:7f00:1]/",
    ],
)
async def test_legacy_address_forms_and_header_injection_are_refused(url: str) -> None:
    """The spellings a resolver accepts for an internal address are judged as that address."""
    with pytest.raises(UrlNotAllowed):
        await resolve_target(url, Policy(allow_http=True))
