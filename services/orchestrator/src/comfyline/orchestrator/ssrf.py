"""The SSRF guard: a webhook may only reach the public internet, unless a setting says otherwise.

A user-supplied URL is resolved once, every address it resolves to is checked, and the request is
then made to that checked address (the original name goes in ``Host`` and in TLS SNI, so
certificates are still verified against it). Resolving once and connecting to what was checked
closes the DNS-rebinding gap between the check and the connection. Refused always: link-local
(169.254.169.254 and the other cloud metadata endpoints), multicast, unspecified and reserved
addresses; refused unless allowed: loopback, and private or otherwise non-global networks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field

import httpx

from comfyline.contracts import ComfylineError, ErrorCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
BLOCKED_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


class UrlNotAllowed(ComfylineError):
    """The URL may not be called from inside the deployment (permanent: not retried)."""

    code = ErrorCode.URL_NOT_ALLOWED


class HostUnresolved(ComfylineError):
    """The URL's host did not resolve (may pass: retried)."""

    code = ErrorCode.SERVICE_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Policy:
    """Which targets the guard lets through."""

    allow_loopback: bool = False
    allow_private: bool = False
    allow_http: bool = True


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send the request: the checked address, and what to tell the server."""

    url: httpx.URL
    host_header: str
    extensions: dict[str, str] = field(default_factory=dict)


def refusal(address: IPAddress, policy: Policy) -> str | None:
    """Why ``address`` may not be reached, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None if policy.allow_loopback else "loopback address"
    if address.is_link_local:
        return "link-local address (cloud metadata)"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "reserved address"
    if not address.is_global:
        return None if policy.allow_private else "private address"
    return None


async def resolve_target(url: str, policy: Policy, timeout_s: float = 3.0) -> Target:
    """Check ``url`` and resolve it to one allowed address.

    Raises:
        UrlNotAllowed: bad scheme, blocked name, or any resolved address is not allowed.
        HostUnresolved: the name did not resolve in time.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise UrlNotAllowed(f"not a valid URL: {exc}") from exc
    schemes = {"https", "http"} if policy.allow_http else {"https"}
    if parsed.scheme not in schemes:
        raise UrlNotAllowed(f"scheme {parsed.scheme!r} is not allowed")
    host = parsed.host.lower().rstrip(".")
    if not host or host in BLOCKED_HOSTS or parsed.userinfo:
        raise UrlNotAllowed("host is not allowed")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = await _resolve(host, port, timeout_s)
    for address in addresses:
        reason = refusal(address, policy)
        if reason:
            raise UrlNotAllowed(f"{host} resolves to a {reason}")
    chosen = addresses[0]
    netloc = parsed.netloc.decode("ascii")
    extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
    return Target(parsed.copy_with(host=str(chosen)), netloc, extensions)


async def _resolve(host: str, port: int, timeout_s: float) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise HostUnresolved(f"cannot resolve {host}: {exc or 'timeout'}") from exc
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise HostUnresolved(f"{host} has no address")
    return found
