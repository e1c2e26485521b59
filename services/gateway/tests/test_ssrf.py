"""The SSRF guard: which addresses are refused, and a fetch that follows redirects safely."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from comfyline.gateway.errors import ApiError
from comfyline.gateway.ssrf import (
    Fetcher,
    Resolver,
    address_allowed,
    body_chunks,
    check_webhook_url,
    checked_target,
)
from comfyline.runtime.ssrf import Policy

PUBLIC = "93.184.216.34"


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("169.254.10.10", False),
        ("100.64.0.1", False),  # CGNAT
        ("100.100.100.200", False),  # Alibaba metadata
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fd00:ec2::254", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.216.34", True),
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
    ],
)
def test_address_allowed(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address)) is allowed


async def resolver_to(*addresses: str) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def test_every_resolved_address_must_be_public() -> None:
    mixed = await resolver_to(PUBLIC, "10.0.0.1")  # DNS answering one public and one private
    with pytest.raises(ApiError) as refused:
        await checked_target("https://cdn.example.com/a.png", mixed, 1.0)
    assert refused.value.code.value == "url_not_allowed"
    public = await resolver_to(PUBLIC)
    target = await checked_target("https://cdn.example.com:8443/a.png", public, 1.0)
    assert (target.host, str(target.address), target.port) == (
        "cdn.example.com",
        PUBLIC,
        8443,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example.com/a.png",
        "https://u:p@cdn.example.com/a.png",
        "https:///a.png",
        "https://cdn.example.com:99999/a.png",
        "file:///etc/passwd",
        "gopher://cdn.example.com/",
    ],
)
async def test_malformed_or_unsafe_urls(url: str) -> None:
    with pytest.raises(ApiError) as refused:
        await checked_target(url, await resolver_to(PUBLIC), 1.0)
    assert refused.value.status == 422


async def test_fetch_connects_to_the_checked_address_and_rechecks_redirects() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/hop":
            return httpx.Response(302, headers={"Location": "https://cdn.example.com/cat.png"})
        if request.url.path == "/evil":
            return httpx.Response(302, headers={"Location": "https://127.0.0.1/admin"})
        return httpx.Response(200, content=b"\x89PNG\r\n\x1a\n" + b"0" * 100)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        fetcher = Fetcher(http, 2.0, resolver=await resolver_to(PUBLIC))
        response, final = await fetcher.open("https://cdn.example.com/hop")
        body = b"".join([c async for c in body_chunks(response, final)])
        await response.aclose()
        assert body.startswith(b"\x89PNG") and final == "https://cdn.example.com/cat.png"
        assert [r.url.host for r in seen] == [PUBLIC, PUBLIC]  # the pinned address, not the name
        assert seen[0].headers["host"] == "cdn.example.com"
        assert seen[0].extensions["sni_hostname"] == "cdn.example.com"
        with pytest.raises(ApiError) as refused:
            await fetcher.open("https://cdn.example.com/evil")
        assert refused.value.code.value == "url_not_allowed"


@pytest.mark.parametrize(
    ("url", "allow_http", "ok"),
    [
        ("https://hooks.example.com/comfyline", False, True),
        ("http://hooks.example.com/comfyline", False, False),
        ("http://hooks.example.com/comfyline", True, True),
        ("https://127.0.0.1/hook", True, False),
        ("https://[::1]/hook", True, False),
        ("https://169.254.169.254/hook", True, False),
        ("https://localhost/hook", True, False),
        ("https://metadata.google.internal/hook", True, False),
        ("https://u:p@hooks.example.com/", True, False),
    ],
)
def test_webhook_urls(url: str, allow_http: bool, ok: bool) -> None:
    policy = Policy(allow_http=allow_http)
    if ok:
        check_webhook_url(url, policy)
    else:
        with pytest.raises(ApiError):
            check_webhook_url(url, policy)


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",
        "http://0x7f.1/",
        "http://2852039166/",
        "http://hooks.example.com/\r\nX-Injected: 1",
        "https://metadata/",
        "https://printer.local/",
    ],
)
def test_webhook_urls_refused_at_submit_in_every_spelling(url: str) -> None:
    """The forms an input URL is refused in are refused for webhooks too (one policy table)."""
    with pytest.raises(ApiError) as refused:
        check_webhook_url(url, Policy(allow_http=True))
    assert refused.value.code.value == "url_not_allowed"
