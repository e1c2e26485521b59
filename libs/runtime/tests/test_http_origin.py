"""Kept-alive connections (:class:`Origin`) against a small HTTP/1.1 server of the test's own,
which answers as each test tells it and counts the connections and requests it took."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from comfyline.runtime.http import HttpFailure, Origin


def reply(status: int, body: bytes, *extra: str) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n" + "".join(
        f"{line}\r\n" for line in extra
    )
    return head.encode() + b"\r\n" + body


@dataclass
class Server:
    """Answers request ``n`` (counted from 0 across connections) with ``answer(n, request)``:
    bytes to send (b"": nothing, the request is left waiting), or None to close unanswered;
    with ``close_after`` it closes each connection once it has answered."""

    answer: Callable[[int, bytes], bytes | None]
    close_after: bool = False
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                out = self.answer(len(self.requests) - 1, request)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def methods(self) -> list[bytes]:
        return [r.split(b" ", 1)[0] for r in self.requests]

    def drop_idle(self) -> None:
        """Close every connection from the server's side (as an idle timeout does)."""
        for writer in self.writers:
            writer.close()


@contextlib.asynccontextmanager
async def serve(
    answer: Callable[[int, bytes], bytes | None], close_after: bool = False
) -> AsyncIterator[Server]:
    server = Server(answer, close_after)
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listening.close()
        server.drop_idle()


@contextlib.asynccontextmanager
async def opened(url: str, read_timeout_s: float = 60.0) -> AsyncIterator[Origin]:
    """An :class:`Origin` on ``url``, its connections closed on the way out."""
    origin = Origin(url, read_timeout_s=read_timeout_s)
    try:
        yield origin
    finally:
        await origin.close()


def ok(body: bytes) -> Callable[[int, bytes], bytes]:
    return lambda n, request: reply(200, body)


async def test_requests_share_one_kept_connection_and_send_their_bodies() -> None:
    async with serve(lambda n, r: reply(200, b"ok:" + r.split(b"\r\n\r\n", 1)[1])) as server:
        async with opened(f"http://127.0.0.1:{server.port}/base") as origin:
            first = await origin.request("POST", "/prompt", {"X-A": "1"}, b'{"a": 1}')
            second = await origin.request("GET", "/queue")
    assert (first.status, first.body, second.body) == (200, b'ok:{"a": 1}', b"ok:")
    assert first.headers["content-length"] == "11"
    assert server.connections == 1
    post, get = server.requests
    assert post.startswith(b"POST /base/prompt HTTP/1.1\r\n")
    assert b"\r\nX-A: 1\r\n" in post and b"\r\nContent-Length: 8\r\n" in post
    assert f"\r\nHost: 127.0.0.1:{server.port}\r\n".encode() in post
    assert get.startswith(b"GET /base/queue HTTP/1.1\r\n") and b"Content-Length" not in get


async def test_a_host_and_length_given_by_the_caller_are_sent_once() -> None:
    async with serve(ok(b"")) as server:
        async with opened(f"http://127.0.0.1:{server.port}") as origin:
            await origin.request("PUT", "/b/k", {"Host": "signed:1", "Content-Length": "3"}, b"abc")
    (put,) = server.requests
    assert put.count(b"Host:") == 1 and b"\r\nHost: signed:1\r\n" in put
    assert put.count(b"Content-Length:") == 1


async def test_an_answer_that_closes_its_connection_is_not_kept() -> None:
    async with serve(lambda n, r: reply(200, b"x", "Connection: close")) as server:
        async with opened(f"http://127.0.0.1:{server.port}") as origin:
            for _ in range(3):
                assert (await origin.request("GET", "/")).body == b"x"
    assert server.connections == 3


async def test_chunked_and_until_close_bodies_are_read_whole() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    async with serve(lambda n, r: chunked) as server:
        async with opened(f"http://127.0.0.1:{server.port}") as origin:
            assert (await origin.request("GET", "/")).body == b"abcde"
            assert (await origin.request("GET", "/")).body == b"abcde"
    assert server.connections == 1

    until_close = b"HTTP/1.1 200 OK\r\n\r\nall of it"
    async with serve(lambda n, r: until_close, close_after=True) as server:
        async with opened(f"http://127.0.0.1:{server.port}") as origin:
            assert (await origin.request("GET", "/")).body == b"all of it"
            assert (await origin.request("GET", "/")).body == b"all of it"
    assert server.connections == 2  # a body ended by the close leaves nothing to keep


async def test_a_kept_connection_the_server_closed_is_replaced() -> None:
    async with serve(ok(b"fine")) as server:
        async with opened(f"http://127.0.0.1:{server.port}") as origin:
            await origin.request("GET", "/")
            server.drop_idle()  # an idle timeout on the server's side
            await asyncio.sleep(0.05)
            assert (await origin.request("POST", "/prompt", None, b"{}")).body == b"fine"
    assert server.connections == 2 and server.methods() == [b"GET", b"POST"]


async def test_a_connection_closed_unanswered_resends_only_idempotent_requests() -> None:
    """The close comes only once the request is written (the race an idle timeout can
    cause): a PUT is sent once more on a new connection, a POST raises, sent once."""
    unanswered = {1, 3}
    async with serve(lambda n, r: None if n in unanswered else reply(200, b"%d" % n)) as server:
        async with opened(f"http://127.0.0.1:{server.port}") as origin:
            assert (await origin.request("GET", "/")).body == b"0"
            with pytest.raises(HttpFailure, match="closed the connection before answering"):
                await origin.request("POST", "/prompt", None, b"{}")
            assert (await origin.request("GET", "/")).body == b"2"
            assert (await origin.request("PUT", "/k", None, b"v")).body == b"4"
    assert server.methods() == [b"GET", b"POST", b"GET", b"PUT", b"PUT"]
    assert server.connections == 3


async def test_a_new_connection_closed_unanswered_is_a_failure_even_for_a_put() -> None:
    async with serve(lambda n, r: None) as server:
        origin = Origin(f"http://127.0.0.1:{server.port}")
        with pytest.raises(HttpFailure, match="closed the connection before answering"):
            await origin.request("PUT", "/k", None, b"v")
    assert server.methods() == [b"PUT"]


async def test_an_answer_cut_short_or_malformed_is_a_failure() -> None:
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"
    async with serve(lambda n, r: short, close_after=True) as server:
        origin = Origin(f"http://127.0.0.1:{server.port}")
        with pytest.raises(HttpFailure, match="cut its answer short"):
            await origin.request("GET", "/")
    async with serve(lambda n, r: b"SMTP ready\r\n\r\n") as server:
        origin = Origin(f"http://127.0.0.1:{server.port}")
        with pytest.raises(HttpFailure, match="malformed"):
            await origin.request("GET", "/")


async def test_a_silent_server_times_out_and_its_connection_is_dropped() -> None:
    async with serve(lambda n, r: b"" if n == 0 else reply(200, b"now")) as server:
        async with opened(f"http://127.0.0.1:{server.port}", read_timeout_s=0.3) as origin:
            with pytest.raises(TimeoutError):
                await origin.request("GET", "/slow")
            assert (await origin.request("GET", "/")).body == b"now"
    assert server.connections == 2  # the timed-out one was not reused


async def test_a_cancelled_request_leaves_no_connection_to_reuse() -> None:
    async with serve(lambda n, r: b"" if n == 0 else reply(200, b"second")) as server:
        async with opened(f"http://127.0.0.1:{server.port}") as origin:
            task = asyncio.create_task(origin.request("GET", "/"))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await origin.request("GET", "/")).body == b"second"
    assert server.connections == 2


async def test_no_server_is_a_failure_and_bad_requests_are_refused() -> None:
    from comfyline.stack.servers import free_port

    origin = Origin(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(HttpFailure, match="cannot connect"):
        await origin.request("GET", "/")
    with pytest.raises(ValueError, match="line break"):
        await origin.request("GET", "/", {"X-A": "1\r\nX-B: 2"})
    with pytest.raises(ValueError, match="line break"):
        await origin.request("GET", "/a b")
    with pytest.raises(ValueError, match="HEAD"):
        await origin.request("HEAD", "/")
    with pytest.raises(ValueError, match="not an http"):
        Origin("ftp://127.0.0.1:21")


@contextlib.contextmanager
def server_thread() -> Iterator[Server]:
    """A server on a loop of its own, in a thread, outliving the loops that call it."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: list[Server] = []
    stop = asyncio.Event()

    async def main() -> None:
        async with serve(ok(b"hi")) as server:
            holder.append(server)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    started.wait(10)
    try:
        yield holder[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_connections_of_an_ended_loop_are_not_reused() -> None:
    """A service runs one loop; tests run one each: the next loop opens its own."""
    with server_thread() as server:
        origin = Origin(f"http://127.0.0.1:{server.port}")

        async def twice() -> list[bytes]:
            return [(await origin.request("GET", "/")).body for _ in range(2)]

        assert asyncio.run(twice()) == [b"hi", b"hi"]
        assert asyncio.run(twice()) == [b"hi", b"hi"]
        assert server.connections == 2


async def test_empty_answers_keep_their_connection() -> None:
    """S3 answers a PUT with an empty body: the connection is kept all the same."""
    async with serve(ok(b"")) as server:
        async with opened(f"http://127.0.0.1:{server.port}") as origin:
            for n in range(5):
                assert (await origin.request("PUT", f"/b/{n}", None, b"v")).body == b""
    assert server.connections == 1


async def test_credentials_in_the_url_go_as_basic_authorization() -> None:
    async with serve(ok(b"")) as server:
        async with opened(f"http://comfy:s%40cret@127.0.0.1:{server.port}") as origin:
            await origin.request("GET", "/queue")
            await origin.request("GET", "/queue", {"Authorization": "Bearer t"})
    first, second = server.requests
    assert b"\r\nAuthorization: Basic Y29tZnk6c0BjcmV0\r\n" in first  # comfy:s@cret
    assert b"Basic" not in second and b"\r\nAuthorization: Bearer t\r\n" in second
    assert f"\r\nHost: 127.0.0.1:{server.port}\r\n".encode() in first
