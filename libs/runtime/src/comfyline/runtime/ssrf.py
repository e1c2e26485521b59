"""The one SSRF guard for every URL Comfyline calls on a user's behalf (job inputs, webhooks).

One policy table decides which addresses a URL may reach; the same checks run when a URL is
accepted (the gateway, without DNS: literal addresses and names that are plainly internal) and
again when it is called (resolved once, every address checked, and the request sent to the
checked address with the original name in ``Host`` and TLS SNI, so DNS rebinding cannot swap it).

| address or name | refused | unless |
|---|---|---|
| cloud metadata addresses and names (``METADATA_ADDRESSES``, ``METADATA_NAMES``) | always | |
| link-local, multicast, unspecified, reserved | always | |
| loopback, `localhost`, `*.localhost` | yes | ``allow_loopback`` |
| private, CGNAT, unique-local, `*.local`, `*.internal` | yes | ``allow_private`` |
| ``http://`` | yes | ``allow_http`` |
| credentials in the URL, control characters or spaces | always | |

IPv4-mapped IPv6 (``::ffff:127.0.0.1``) and NAT64 (``64:ff9b::7f00:1``) are judged by the IPv4
address they carry, and the legacy IPv4 spellings that resolvers accept (``2130706433``,
``0x7f.1``, ``127.1``) by the address they mean.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from comfyline.contracts import ComfylineError, ErrorCode

from .settings import UrlPolicySettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("169.254.170.2"),  # ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6
    }
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


class UrlNotAllowed(ComfylineError):
    """The URL may not be called from inside the deployment (permanent: never retried)."""

    code = ErrorCode.URL_NOT_ALLOWED


class HostUnresolved(ComfylineError):
    """The URL's host did not resolve (may pass later)."""

    code = ErrorCode.SERVICE_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Policy:
    """Which targets the guard lets through (see the module's table)."""

    allow_loopback: bool = False
    allow_private: bool = False
    allow_http: bool = False

    @classmethod
    def of(cls, settings: UrlPolicySettings) -> Policy:
        """The policy a settings block describes."""
        return cls(settings.allow_loopback, settings.allow_private, settings.allow_http)


#: Job inputs fetched from URLs: https to the public internet only.
INPUTS = Policy()


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: where to connect, and what to tell the server."""

    scheme: str
    host: str
    port: int
    address: IPAddress
    path_and_query: str
    host_header: str
    extensions: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The URL with the checked address in place of the name."""
        netloc = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.scheme}://{netloc}:{self.port}{self.path_and_query}"


def refusal(address: IPAddress, policy: Policy) -> str | None:
    """Why ``address`` may not be reached under ``policy``, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return refusal(address.ipv4_mapped, policy)
        if address in _NAT64:
            return refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), policy)
    if address in METADATA_ADDRESSES:
        return "cloud metadata address"
    if address.is_loopback:
        return None if policy.allow_loopback else "loopback address"
    if address.is_link_local:
        return "link-local address"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "reserved address"
    if not address.is_global:
        return None if policy.allow_private else "private address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a host names literally, legacy IPv4 spellings included, or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_url(url: str, policy: Policy) -> Target | None:
    """Check what can be checked without DNS; the :class:`Target` when the host is a literal
    address (already checked), None when it is a name still to resolve.

    Raises:
        UrlNotAllowed: a bad scheme, credentials, unsafe characters, a refused literal address or
            a name that is plainly internal.
    """
    parts, host, port = _checked_parts(url, policy)
    literal = literal_address(host)
    if literal is None:
        return None
    reason = refusal(literal, policy)
    if reason:
        raise UrlNotAllowed(f"{host} is a {reason}")
    return _target(parts, host, port, literal)


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_target(
    url: str, policy: Policy, timeout_s: float = 3.0, resolver: Resolver | None = None
) -> Target:
    """Check ``url``, resolve it once, check every address; the target to connect to.

    Raises:
        UrlNotAllowed: as :func:`check_url`, or any resolved address is refused.
        HostUnresolved: the name did not resolve in time.
    """
    checked = check_url(url, policy)
    if checked is not None:
        return checked
    parts, host, port = _checked_parts(url, policy)
    addresses = await _resolve(host, port, timeout_s, resolver or system_resolver)
    for address in addresses:
        reason = refusal(address, policy)
        if reason:
            raise UrlNotAllowed(f"{host} resolves to a {reason}")
    return _target(parts, host, port, addresses[0])


def _checked_parts(url: str, policy: Policy) -> tuple[SplitResult, str, int]:
    """The URL's parts, host name and port, once its form and name pass the policy."""
    if _UNSAFE.search(url):
        raise UrlNotAllowed("the URL has control characters or spaces")
    try:
        parts = urlsplit(url)
        explicit_port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed("not a valid URL") from exc
    schemes = {"https", "http"} if policy.allow_http else {"https"}
    if parts.scheme not in schemes:
        raise UrlNotAllowed(f"only {' or '.join(sorted(schemes))} URLs are allowed")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("URLs with credentials are not allowed")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UrlNotAllowed("the URL has no host")
    if host in METADATA_NAMES:
        raise UrlNotAllowed(f"{host} is a cloud metadata name")
    if (host == "localhost" or host.endswith(".localhost")) and not policy.allow_loopback:
        raise UrlNotAllowed(f"{host} is a loopback name")
    if host.endswith((".local", ".internal")) and not policy.allow_private:
        raise UrlNotAllowed(f"{host} is a private name")
    return parts, host, explicit_port or (443 if parts.scheme == "https" else 80)


def _target(parts: SplitResult, host: str, port: int, address: IPAddress) -> Target:
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return Target(parts.scheme, host, port, address, path, netloc, extensions)


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the event loop's resolver)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def _resolve(host: str, port: int, timeout_s: float, resolver: Resolver) -> list[IPAddress]:
    try:
        async with asyncio.timeout(timeout_s):
            answers = await resolver(host, port)
    except (OSError, TimeoutError) as exc:
        raise HostUnresolved(f"cannot resolve {host}: {exc or 'timeout'}") from exc
    found: list[IPAddress] = []
    for answer in answers:
        address = ipaddress.ip_address(answer.split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise HostUnresolved(f"{host} has no address")
    return found
