"""HTTP clients bound to the running event loop: an aiohttp session made on first use, and
:class:`Origin`, kept-alive connections for the small requests on a job's path.

A service runs one loop for its life; tests run one per test, and a connection may only be
used on the loop it was made on. Requests with streamed bodies use aiohttp (a fraction of the
CPU of httpx on each); the job's own small requests use :class:`Origin` (a third of aiohttp's).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiohttp
import httptools


class LoopSession:
    """The session of the running loop, made by ``make`` when there is none (or it closed)."""

    def __init__(self, make: Callable[[], aiohttp.ClientSession]) -> None:
        self._make = make
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> aiohttp.ClientSession:
        """The running loop's session."""
        session = self._session
        loop = asyncio.get_running_loop()
        if session is None or session.closed or self._loop is not loop:
            self._loop = loop
            session = self._session = self._make()
        return session

    async def close(self) -> None:
        """Close the session (its connections), if one was made."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


class HttpFailure(OSError):
    """An exchange that gave no answer: no connection, the connection closed before the whole
    answer came, or an answer that is not HTTP."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole answer: its status, its headers (names in lower case) and its body."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Answer:
    """``httptools``' callbacks for one answer."""

    __slots__ = ("body", "complete", "headers", "headers_done", "keep_alive", "parser")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.headers_done = False
        self.keep_alive = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # (asked here: once the message is complete the parser has forgotten)
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


#: Methods a request may be sent again with when a kept connection turns out closed (RFC 9110
#: 9.2.2: idempotent).
_IDEMPOTENT = frozenset({"GET", "PUT", "DELETE", "OPTIONS"})
_FORBIDDEN = re.compile(r"[\r\n\0]")


class Origin:
    """Kept-alive HTTP/1.1 connections to one server, for requests whose bodies are small.

    A job's path makes two requests of its own, the worker's ``POST /prompt`` and the ``PUT``
    of each output to S3. aiohttp spent about 0.4 ms of CPU on each (its request and response
    objects, timers and connector), more than the exchange itself; here the request is
    written in one call and its answer parsed by ``httptools`` (the parser uvicorn uses), for
    about a third of that. Streaming bodies stay with aiohttp.

    Connections are kept for the running event loop (a service runs one; tests one each). An
    idempotent request on a kept connection the server closed meanwhile is sent once more on
    a new one; any other failure raises :class:`HttpFailure`, a timeout ``TimeoutError``.
    ``connect_timeout_s`` bounds the connection, ``read_timeout_s`` the wait for the whole
    answer once the request is written.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        keep: int = 8,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        self.prefix = parts.path.rstrip("/")
        self._host_header = f"{self.host}:{self.port}" if parts.port else self.host
        if ":" in self.host:  # an IPv6 literal
            self._host_header = f"[{self.host}]" + (f":{self.port}" if parts.port else "")
        #: Credentials in the URL (``http://user:secret@host``) go as Basic authorization.
        self._auth: str | None = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(pair.encode()).decode()
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._keep = keep
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ssl: ssl.SSLContext | None = None

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Reply:
        """Send ``method target`` (a path, after the base URL's own) and read the answer."""
        message = self._message(method, self.prefix + target, headers or {}, body)
        for attempt in (1, 2):
            kept = self._take()
            connection = kept or await self._connect()
            try:
                reply, reusable = await self._exchange(connection, message)
            except _Unanswered:
                connection[1].close()
                if kept is not None and attempt == 1 and method in _IDEMPOTENT:
                    continue  # the server had closed it: a new connection
                raise HttpFailure(
                    f"{self._host_header} closed the connection before answering"
                ) from None
            except BaseException:
                connection[1].close()  # cancelled or failed mid-answer: its state is unknown
                raise
            if reusable and len(self._idle) < self._keep:
                self._idle.append(connection)
            else:
                connection[1].close()
            return reply
        raise AssertionError("unreachable")

    def _message(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
        if method == "HEAD":  # its answer's length is not followed by a body: not parsed here
            raise ValueError("HEAD is not sent through an Origin")
        if _FORBIDDEN.search(target) or " " in target:
            raise ValueError(f"request target {target!r} holds a space or a line break")
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        given = set()
        for name, value in headers.items():
            if _FORBIDDEN.search(name) or _FORBIDDEN.search(value):
                raise ValueError(f"header {name!r} holds a line break")
            lines.append(f"{name}: {value}\r\n")
            given.add(name.lower())
        if "host" not in given:  # (a signed request names its own)
            lines.append(f"Host: {self._host_header}\r\n")
        if self._auth is not None and "authorization" not in given:
            lines.append(f"Authorization: {self._auth}\r\n")
        if "content-length" not in given and (body or method in {"POST", "PUT", "PATCH"}):
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1") + body

    def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # connections of an earlier loop are gone with it
            self._loop, stale, self._idle = loop, self._idle, []
            for _, writer in stale:
                with contextlib.suppress(Exception):
                    writer.close()
        while self._idle:
            reader, writer = self._idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                return await asyncio.open_connection(
                    self.host, self.port, ssl=self._ssl, limit=_READ_SIZE
                )
        except OSError as exc:
            raise HttpFailure(f"cannot connect to {self._host_header}: {exc}") from exc

    async def _exchange(
        self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], message: bytes
    ) -> tuple[Reply, bool]:
        reader, writer = connection
        answer = _Answer()
        parser = answer.parser
        try:
            writer.write(message)
            if len(message) > _READ_SIZE:
                await writer.drain()
            async with asyncio.timeout(self.read_timeout_s):
                while not answer.complete:
                    data = await reader.read(_READ_SIZE)
                    if not data:
                        if not answer.headers_done:
                            raise _Unanswered
                        if "content-length" in answer.headers or answer.keep_alive:
                            raise HttpFailure(f"{self._host_header} cut its answer short")
                        break  # a body that ends with the connection
                    parser.feed_data(data)
        except ConnectionError as exc:
            if not answer.headers_done:
                raise _Unanswered from exc
            raise HttpFailure(f"{self._host_header} cut its answer short: {exc}") from exc
        except httptools.HttpParserError as exc:
            raise HttpFailure(f"{self._host_header} sent a malformed answer: {exc}") from exc
        reply = Reply(parser.get_status_code(), answer.headers, b"".join(answer.body))
        del answer.parser  # (the two refer to each other: freed now, not by a collection)
        return reply, answer.complete and answer.keep_alive

    async def close(self) -> None:
        """Close the kept connections."""
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Unanswered(Exception):
    """Nothing of an answer came before the connection closed."""


_READ_SIZE = 1 << 16
