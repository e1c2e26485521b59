"""Fetching a job input from an https URL without letting it reach inside our network (SSRF).

The rules are ``comfyline.runtime.ssrf``'s one policy table (inputs: ``ssrf.INPUTS``, https to
public addresses only); webhook URLs are checked against the same table at submission. The
fetch connects to the address that was checked (never
resolving again, so DNS rebinding cannot swap it), sends the real host name for TLS (SNI and
certificate check) and ``Host``, follows at most three redirects (each checked the same way),
and stops at the size limit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from urllib.parse import urljoin

import httpx

from comfyline.contracts import ErrorCode
from comfyline.runtime import ssrf

from .errors import ApiError

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = ssrf.Resolver
system_resolver = ssrf.system_resolver
MAX_REDIRECTS = 3


def refused(message: str, url: str) -> ApiError:
    """422 ``url_not_allowed``."""
    return ApiError(422, ErrorCode.URL_NOT_ALLOWED, message, details={"url": url[:300]})


def address_allowed(address: IP) -> bool:
    """True only for an address an input URL may reach (a global unicast, no metadata)."""
    return ssrf.refusal(address, ssrf.INPUTS) is None


async def checked_target(url: str, resolver: Resolver, timeout: float) -> ssrf.Target:  # noqa: ASYNC109
    """Where to connect for ``url`` (its checked address), or raise ``url_not_allowed``."""
    try:
        target = await ssrf.resolve_target(url, ssrf.INPUTS, timeout, resolver)
    except ssrf.UrlNotAllowed as exc:
        raise refused(exc.message, url) from exc
    except ssrf.HostUnresolved as exc:
        raise ApiError(
            422, ErrorCode.INPUT_FETCH_FAILED, exc.message, details={"url": url[:300]}
        ) from exc
    return target


def check_webhook_url(url: str, policy: ssrf.Policy) -> None:
    """Refuse a webhook URL the orchestrator would refuse to call (no DNS here: literal
    addresses and plainly internal names; the orchestrator resolves and checks at send time)."""
    try:
        ssrf.check_url(url, policy)
    except ssrf.UrlNotAllowed as exc:
        raise refused(f"webhook: {exc.message}", url) from exc


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
            target = await checked_target(url, self.resolver, self.timeout)
            request = self.http.build_request(
                "GET",
                target.url,
                headers={"Host": target.host_header, "Accept": "*/*"},
                extensions={**target.extensions, "timeout": httpx.Timeout(self.timeout).as_dict()},
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
