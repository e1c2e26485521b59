"""ComfyUI's HTTP API, as the worker uses it, with every foreign failure translated.

One :class:`ComfyClient` per server. Every call has a timeout with separate connect and read
values; a refused connection, a timeout or a 5xx becomes :class:`ComfyUnavailable` (transient),
a refused prompt becomes :class:`PromptRejected` with its code. Nothing here depends on the
newer releases' ``/api/jobs`` routes: cancellation is ``/interrupt`` and ``/queue {"delete"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp

from comfyline.contracts import ErrorCode
from comfyline.runtime import LoopSession
from comfyline.runtime.http import Origin
from comfyline.runtime.metrics import OUTPUTS_READ

from .errors import ComfyUnavailable, WorkerError, rejection

JsonGraph = dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole HTTP answer: its status and body."""

    status_code: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON (``ValueError`` when it is not)."""
        return json.loads(self.body)


_JSON = {"Content-Type": "application/json"}

#: Failures of a request to ComfyUI that say it is unreachable or broke off.
_HTTP_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError)


async def _read_file(path: Path, chunk_size: int) -> AsyncIterator[bytes]:
    """A local file's chunks: a small file in one read on the event loop, a larger one's
    chunks read in a thread (a large video is not read on the event loop)."""
    try:
        with path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size <= chunk_size:
                chunk = handle.read()
                if chunk:
                    yield chunk
                return
            chunk = await asyncio.to_thread(handle.read, chunk_size)
            while chunk:
                yield chunk
                chunk = await asyncio.to_thread(handle.read, chunk_size)
    except OSError as exc:
        raise ComfyUnavailable(f"reading {path.name} from the output folder: {exc}") from exc


class ComfyClient:
    """HTTP calls to one ComfyUI server (``base_url`` like ``http://127.0.0.1:8188``).

    Requests with small bodies (the prompt, the queue, the history) go on kept connections of
    an :class:`~comfyline.runtime.http.Origin` (a third of aiohttp's CPU per request: the
    prompt is on every job's path); streamed ones (an upload, ``/view``) through aiohttp.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        output_dir: Path | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: The server's output folder when this process can read it (the worker runs beside
        #: its ComfyUI, the folder shared): output files are read there, not through /view.
        self.output_dir = output_dir.resolve() if output_dir is not None else None
        self.read_timeout_s = read_timeout_s
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._http = LoopSession(lambda: aiohttp.ClientSession(timeout=self.timeout))
        #: Kept connections for the small requests (the prompt, the queue, the history).
        self._origin = Origin(
            self.base_url, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s
        )

    async def aclose(self) -> None:
        """Close the connections."""
        await self._origin.close()
        await self._http.close()

    def ws_url(self, client_id: str) -> str:
        """The WebSocket address for ``client_id`` (same host, ws/wss scheme)."""
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = parts.path.rstrip("/") + "/ws"
        return urlunsplit((scheme, parts.netloc, path, urlencode({"clientId": client_id}), ""))

    async def _request(self, method: str, path: str, body: Any = None) -> Answer:
        """A request with a JSON body (or none) on a kept connection, its answer whole."""
        data = b"" if body is None else json.dumps(body).encode()
        try:
            reply = await self._origin.request(
                method, path, _JSON if body is not None else None, data
            )
        except (OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        return self._checked(method, path, Answer(reply.status, reply.body))

    async def _stream(
        self, path: str, body: AsyncIterator[bytes], headers: dict[str, str]
    ) -> Answer:
        """A ``POST`` whose body streams (aiohttp), its answer whole."""
        try:
            async with self._http.get().post(
                self.base_url + path, data=body, headers=headers
            ) as answer:
                response = Answer(answer.status, await answer.read())
        except _HTTP_FAILURES as exc:
            raise self._unreachable(exc) from exc
        return self._checked("POST", path, response)

    def _unreachable(self, exc: BaseException) -> ComfyUnavailable:
        return ComfyUnavailable(
            f"ComfyUI at {self.base_url} unreachable: {type(exc).__name__} {exc}".strip()
        )

    def _checked(self, method: str, path: str, response: Answer) -> Answer:
        if response.status_code >= 500:
            raise ComfyUnavailable(
                f"ComfyUI at {self.base_url} answered {response.status_code} to {method} {path}"
            )
        return response

    async def _json(self, method: str, path: str) -> Any:
        response = await self._request(method, path)
        if response.status_code != 200:
            raise ComfyUnavailable(
                f"ComfyUI at {self.base_url} answered {response.status_code} to {method} {path}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ComfyUnavailable(f"ComfyUI sent invalid JSON for {path}") from exc

    # --- health and capability ---------------------------------------------------------------
    async def system_stats(self) -> dict[str, Any]:
        """``GET /system_stats``: OS, versions, devices (GPU name, VRAM)."""
        data = await self._json("GET", "/system_stats")
        return data if isinstance(data, dict) else {}

    async def object_info(self) -> dict[str, Any]:
        """``GET /object_info``: every node class with its inputs (hundreds of KB)."""
        data = await self._json("GET", "/object_info")
        return data if isinstance(data, dict) else {}

    # --- running -----------------------------------------------------------------------------
    async def post_prompt(
        self,
        graph: JsonGraph,
        client_id: str,
        prompt_id: str,
        extra_data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``POST /prompt`` with our client id and our prompt id; refusals are classified.

        ``extra_data`` is kept by ComfyUI in the queue entry (how a later worker recognises a
        leftover prompt of ours). A 200 may still carry ``node_errors`` (only the valid branches
        then run): the caller checks them. ``front`` is never set (it reorders the queue).
        """
        body: dict[str, Any] = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = extra_data
        response = await self._request("POST", "/prompt", body)
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code == 200 and isinstance(data, dict):
            return data
        if response.status_code == 400:
            raise rejection(data, graph)
        raise ComfyUnavailable(f"POST /prompt answered {response.status_code}")

    async def interrupt(self, prompt_id: str | None) -> None:
        """``POST /interrupt``: stop the running prompt (only if it is ``prompt_id``)."""
        body = {"prompt_id": prompt_id} if prompt_id else None
        await self._request("POST", "/interrupt", body)

    async def delete_pending(self, prompt_ids: list[str]) -> None:
        """``POST /queue {"delete": ids}``: remove pending prompts (no frame is ever sent)."""
        await self._request("POST", "/queue", {"delete": prompt_ids})

    async def queue(self) -> tuple[set[str], set[str]]:
        """The prompt ids running and pending, from ``GET /queue``."""
        data = await self._json("GET", "/queue")

        def ids(entries: Any) -> set[str]:
            found: set[str] = set()
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, list) and len(entry) > 1:
                    found.add(str(entry[1]))
            return found

        if not isinstance(data, dict):
            return set(), set()
        return ids(data.get("queue_running")), ids(data.get("queue_pending"))

    async def pending(self) -> list[tuple[str, dict[str, Any]]]:
        """The pending prompts, oldest first, each with the ``extra_data`` it was posted with."""
        data = await self._json("GET", "/queue")
        entries = data.get("queue_pending") if isinstance(data, dict) else None
        found: list[tuple[float, str, dict[str, Any]]] = []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, list) and len(entry) > 3:
                number = entry[0] if isinstance(entry[0], int | float) else 0
                extra = entry[3] if isinstance(entry[3], dict) else {}
                found.append((number, str(entry[1]), extra))
        return [(prompt_id, extra) for _, prompt_id, extra in sorted(found, key=lambda f: f[0])]

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished prompt's history entry, or None (unknown ids answer ``{}``).

        Only trusted once ``status`` is in it: the entry is written after
        ``execution_success`` is sent, so reading it right then races (see the protocol doc).
        """
        data = await self._json("GET", f"/history/{prompt_id}")
        entry = data.get(prompt_id) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) and entry.get("status") else None

    # --- files -------------------------------------------------------------------------------
    async def upload(
        self,
        name: str,
        chunks: AsyncIterator[bytes],
        *,
        size: int | None,
        content_type: str,
        subfolder: str,
    ) -> str:
        """Stream a file into ComfyUI's ``input/<subfolder>/`` (``overwrite=true``).

        Returns the name a loader node takes (``subfolder/name``). The multipart body is
        written by hand so the file streams through without being held whole.
        """
        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        fields = {"type": "input", "subfolder": subfolder, "overwrite": "true"}
        tail = b"\r\n" + b"".join(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
            ).encode()
            for key, value in fields.items()
        )
        tail += f"--{boundary}--\r\n".encode()

        # A server that stops taking the body (hung, frozen) would hold the write forever: the
        # read timeout counts only while an answer is awaited. So each chunk taken restarts a
        # clock of ``read_timeout_s``, stopped once the last one is.
        loop = asyncio.get_running_loop()
        stall = asyncio.timeout(None)

        def taken() -> None:
            stall.reschedule(loop.time() + self.read_timeout_s)

        async def body() -> AsyncIterator[bytes]:
            taken()
            yield head
            async for chunk in chunks:
                taken()
                yield chunk
            taken()
            yield tail
            stall.reschedule(None)

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if size is not None:
            headers["Content-Length"] = str(len(head) + size + len(tail))
        try:
            async with stall:
                response = await self._stream("/upload/image", body(), headers)
        except TimeoutError as exc:
            raise ComfyUnavailable(
                f"ComfyUI at {self.base_url} stopped taking the upload of {name} "
                f"({self.read_timeout_s:g}s without taking a byte)"
            ) from exc
        if response.status_code != 200:
            raise ComfyUnavailable(f"/upload/image answered {response.status_code} for {name}")
        try:
            data = response.json()
        except ValueError as exc:
            raise ComfyUnavailable("/upload/image sent invalid JSON") from exc
        stored, folder = str(data.get("name") or name), str(data.get("subfolder") or "")
        return f"{folder}/{stored}" if folder else stored

    def _in_output_dir(self, filename: str, subfolder: str, kind: str) -> Path | None:
        """Where an output file is in the shared output folder, if it is there (``None``: not
        shared, another kind of file, a name that leaves the folder, or no such file)."""
        if self.output_dir is None or kind != "output":
            return None
        path = (self.output_dir / subfolder / filename).resolve()
        if not path.is_relative_to(self.output_dir) or not path.is_file():
            return None
        return path

    @contextlib.asynccontextmanager
    async def view(
        self, filename: str, subfolder: str, kind: str, chunk_size: int = 1 << 20
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """An output file as a stream of chunks of at most ``chunk_size`` bytes: read from the
        shared output folder when it is there (no request to ComfyUI, whose CPU stays with its
        jobs), else ``GET /view``.

        A failure to reach the file or to read it is :class:`ComfyUnavailable`; whatever the
        caller raises while it reads passes through as it is.
        """
        local = self._in_output_dir(filename, subfolder, kind)
        if local is not None:
            OUTPUTS_READ.labels("folder").inc()
            yield _read_file(local, chunk_size)
            return
        OUTPUTS_READ.labels("view").inc()
        params = {"filename": filename, "subfolder": subfolder, "type": kind}
        failed = f"/view {filename!r} failed"
        try:
            response = await self._http.get().get(self.base_url + "/view", params=params)
        except _HTTP_FAILURES as exc:
            raise ComfyUnavailable(f"{failed}: {type(exc).__name__}") from exc
        async with response:
            if response.status == 404:
                # a cached run names a file that is gone: running again cannot help
                raise WorkerError(
                    f"output {subfolder}/{filename} is missing on the ComfyUI server",
                    code=ErrorCode.COMFY_NO_OUTPUT,
                )
            if response.status != 200:
                raise ComfyUnavailable(f"/view {filename!r} answered {response.status}")

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in response.content.iter_chunked(chunk_size):
                        yield chunk
                except _HTTP_FAILURES as exc:
                    raise ComfyUnavailable(f"{failed}: {type(exc).__name__}") from exc

            yield chunks()
