"""Fetching a job input from an https URL without letting it reach inside our network (SSRF).

A URL is refused unless it is ``https``, has no credentials, and *every* address its host
resolves to is a global unicast address: loopback, private, link-local, CGNAT, multicast,
reserved and unspecified ranges are refused, as are the cloud metadata addresses, IPv4-mapped
and NAT64 forms included. The fetch then connects to the address that was checked (never
resolving again, so DNS rebinding cannot swap it), sends the real host name for TLS (SNI and
certificate check) and ``Host``, follows at most three redirects (each checked the same way),
and stops at the size limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urljoin, urlsplit

import httpx

from comfyline.contracts import ErrorCode

from .errors import ApiError

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_address("169.254.170.2"),  # ECS task metadata
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6
}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
MAX_REDIRECTS = 3


def refused(message: str, url: str) -> ApiError:
    """422 ``url_not_allowed``."""
    return ApiError(422, ErrorCode.URL_NOT_ALLOWED, message, details={"url": url[:300]})


def address_allowed(address: IP) -> bool:
    """True only for a global unicast address that is no metadata endpoint."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_allowed(address.ipv4_mapped)
        if address in _NAT64:
            return address_allowed(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address in METADATA_ADDRESSES:
        return False
    return bool(address.is_global) and not address.is_multicast


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the event loop's resolver, in a thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def checked_target(url: str, resolver: Resolver, timeout: float) -> tuple[str, str, int]:  # noqa: ASYNC109
    """``(host, address, port)`` to connect to for ``url``, or raise ``url_not_allowed``."""
    try:
        parts = urlsplit(url)
        port = parts.port or 443
    except ValueError as exc:
        raise refused("not a valid URL", url) from exc
    if parts.scheme != "https":
        raise refused("only https URLs are fetched", url)
    if parts.username or parts.password:
        raise refused("URLs with credentials are not fetched", url)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise refused("the URL has no host", url)
    try:
        literal: IP | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolver(host, port)
        except (OSError, TimeoutError) as exc:
            raise ApiError(
                422, ErrorCode.INPUT_FETCH_FAILED, f"cannot resolve {host}", details={"url": url}
            ) from exc
    if not addresses:
        raise refused(f"{host} has no address", url)
    for address in addresses:
        if not address_allowed(ipaddress.ip_address(address.split("%", 1)[0])):
            raise refused(f"{host} resolves to a non-public address", url)
    return host, addresses[0], port


def check_webhook_url(url: str, allow_http: bool) -> None:
    """Refuse webhook targets that are plainly internal (no DNS here: the sender re-checks).

    Literal non-public addresses and local names are refused at submission; ``http`` only in
    development. The orchestrator, which delivers, must still resolve and check at send time.
    """
    parts = urlsplit(url)
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        raise refused("webhook URLs must be https", url)
    if parts.username or parts.password:
        raise refused("webhook URLs with credentials are not allowed", url)
    host = (parts.hostname or "").rstrip(".").lower()
    if not host or host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise refused("webhook URLs must name a public host", url)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return
    if not address_allowed(literal):
        raise refused("webhook URLs must not point at a non-public address", url)


class Fetcher:
    """Fetches https URLs through the SSRF guard, streaming the body."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        timeout: float,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.http = http
        self.timeout = timeout
        self.resolver = resolver

    async def open(self, url: str) -> tuple[httpx.Response, str]:
        """An open streaming response for ``url`` (checked at every hop) and the final URL.

        The caller reads ``response.aiter_bytes()`` and must ``aclose()`` it.
        """
        for _ in range(MAX_REDIRECTS + 1):
            host, address, port = await checked_target(url, self.resolver, self.timeout)
            parts = urlsplit(url)
            netloc = f"[{address}]" if ":" in address else address
            target = f"https://{netloc}:{port}{parts.path or '/'}"
            if parts.query:
                target += f"?{parts.query}"
            request = self.http.build_request(
                "GET",
                target,
                headers={"Host": parts.netloc.rsplit("@", 1)[-1], "Accept": "*/*"},
                extensions={
                    "sni_hostname": host,
                    "timeout": httpx.Timeout(self.timeout).as_dict(),
                },
            )
            try:
                response = await self.http.send(request, stream=True, follow_redirects=False)
            except httpx.HTTPError as exc:
                raise _fetch_failed(url, f"cannot fetch: {type(exc).__name__}") from exc
            if response.is_redirect and "location" in response.headers:
                await response.aclose()
                url = urljoin(url, response.headers["location"])
                continue
            if response.status_code != 200:
                await response.aclose()
                raise _fetch_failed(url, f"the URL answered {response.status_code}")
            return response, url
        raise _fetch_failed(url, "too many redirects")


async def body_chunks(response: httpx.Response, url: str) -> AsyncIterator[bytes]:
    """A response's body, translating transport errors."""
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.HTTPError as exc:
        raise _fetch_failed(url, f"fetch interrupted: {type(exc).__name__}") from exc


def _fetch_failed(url: str, message: str) -> ApiError:
    return ApiError(422, ErrorCode.INPUT_FETCH_FAILED, message, details={"url": url[:300]})
