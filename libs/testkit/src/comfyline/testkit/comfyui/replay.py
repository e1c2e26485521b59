"""Replay a recorded ComfyUI transcript (tests/comfyui_protocol/transcripts) against a server and
compare every HTTP exchange and every WebSocket frame, ids, timestamps and timings aside.

The replayer sends the recorded requests in order with fresh ids (every UUID in the recording is
mapped to a new one), and before each step waits until every socket has received as many frames
as the recording shows at that point, so causally ordered frames stay in order. Answers and
frames are then normalised (ids mapped back, timestamps, tracebacks, random temp names, prompt
numbers and local paths replaced by placeholders) and compared exactly.
"""

from __future__ import annotations

import ast
import io
import re
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from comfyline.testkit.comfyui.client import ComfyClient, Reply, Socket
from comfyline.testkit.comfyui.normalize import (
    TEMP_NAME,
    describe_frame,
    expected_frame,
    frame_diff,
    map_ids,
    map_paths,
    normalize,
    png_size,
    shape,
    split_floating,
    subset,
)

FILE_FIELD = re.compile(r"image=<file ([^,]+), ([^,]+), \d+ bytes, (\d+)x(\d+)>")
OTHER_FIELD = re.compile(r"(overwrite|subfolder|type)=([^,<>\s]+)")


class Replayer:
    """Runs one transcript against `client`'s server and collects the differences."""

    def __init__(self, client: ComfyClient, transcript: dict[str, Any], input_dir: Path) -> None:
        self.client = client
        self.transcript = transcript
        self.input_dir = input_dir
        self.fresh: dict[str, str] = {}
        self.original: dict[str, str] = {}
        self.sockets: dict[str, Socket] = {}
        self.expected: dict[str, list[dict[str, Any]]] = {}
        self.problems: list[str] = []
        self.numbers: list[tuple[float, float]] = []
        self.watcher: Socket | None = None
        self._upload_bytes = b""

    def new_id(self, recorded: str) -> str:
        if recorded not in self.fresh:
            made = str(uuid.uuid4())
            self.fresh[recorded], self.original[made] = made, recorded
        return self.fresh[recorded]

    def back(self, value: Any) -> Any:
        """Actual answer -> recording's ids and placeholders."""
        mapped = map_ids(value, lambda found: self.original.get(found, found))
        return map_paths(mapped, str(self.input_dir))

    async def run(self) -> list[str]:
        self.watcher = await self.client.connect(str(uuid.uuid4()))
        for step in self.transcript["steps"]:
            if step["dir"] == "ws_in":
                self.expected.setdefault(step["socket"], []).append(expected_frame(step))
                continue
            for name, frames in self.expected.items():
                socket = self.sockets.get(name)
                if socket is not None and not socket.closed.is_set():
                    await socket.wait_count(len(frames))
            await self._step(step)
        await self._finish()
        self._check_numbers()
        return self.problems

    async def _step(self, step: dict[str, Any]) -> None:
        kind = step["dir"]
        if kind == "ws_open":
            recorded = step["query"].get("clientId")
            client_id = self.new_id(recorded) if recorded else None
            self.sockets[step["socket"]] = await self.client.connect(client_id, wait=False)
        elif kind == "ws_out":
            await self.sockets[step["socket"]].send_json(map_ids(step["frame"], self.new_id))
        elif kind == "ws_close":
            await self.sockets[step["socket"]].close()
        elif kind == "note":
            self._note(step["text"])
        elif kind == "http":
            await self._http(step)

    def _note(self, text: str) -> None:
        match = re.match(r"file (\S+) deleted from <input_dir>", text)
        if match:
            (self.input_dir / match.group(1)).unlink()

    async def _http(self, step: dict[str, Any]) -> None:
        request, expected = step["request"], step["response"]
        path = map_ids(request["path"], self.new_id)
        if (
            path.startswith("/history/")
            and request["method"] == "GET"
            and expected.get("json") != {}
        ):
            await self._wait_idle()
        reply = await self._send(request, path)
        self._compare_http(request, path, expected, reply)

    async def _send(self, request: dict[str, Any], path: str) -> Reply:
        headers = {
            k: v.replace("8188", str(self._port()))
            for k, v in request.get("headers", {}).items()
            if k != "Content-Type"
        }
        params = map_ids(request.get("query"), self.new_id)
        if params and TEMP_NAME.search(params.get("filename", "")):
            params = {**params, "filename": self._temp_name(params["filename"])}
        note = request.get("note", "")
        if "multipart form" in note:
            return await self.client.request(
                "POST", path, data=self._form(note), headers=headers or None
            )
        if "json" in request:
            body = map_ids(request["json"], self.new_id)
            return await self.client.request(
                request["method"], path, json_body=body, params=params, headers=headers or None
            )
        data = request.get("body_text")
        return await self.client.request(
            request["method"],
            path,
            data=data.encode() if data is not None else None,
            params=params,
            headers={**headers, "Content-Type": "application/json"}
            if data is not None
            else headers,
        )

    def _temp_name(self, recorded: str) -> str:
        """Our name for a recorded temp file: the same name but our random letters."""
        wanted = TEMP_NAME.sub("ComfyUI_temp_<rand>_", recorded)
        for socket in self.sockets.values():
            for frame in socket.frames:
                if frame.type == "executed":
                    for images in frame.data["output"].values():
                        for image in images:
                            name = image.get("filename", "") if isinstance(image, dict) else ""
                            if TEMP_NAME.sub("ComfyUI_temp_<rand>_", name) == wanted:
                                return str(name)
        return recorded

    def _port(self) -> int:
        return int(self.client.url.rsplit(":", 1)[1])

    def _form(self, note: str) -> aiohttp.FormData:
        form = aiohttp.FormData()
        found = FILE_FIELD.search(note)
        if found:
            name, content_type, width, height = found.groups()
            if "same bytes" not in note or not self._upload_bytes:
                color = uuid.uuid4().bytes[:3]
                buffer = io.BytesIO()
                Image.new("RGB", (int(width), int(height)), tuple(color)).save(buffer, "PNG")
                self._upload_bytes = buffer.getvalue()
            form.add_field("image", self._upload_bytes, filename=name, content_type=content_type)
        for key, value in OTHER_FIELD.findall(note.split("multipart form:")[1]):
            form.add_field(key, value)
        return form

    async def _wait_idle(self) -> None:
        """Before reading a history entry that the recording shows as present."""
        assert self.watcher is not None
        status = await self.client.get_json("/prompt")
        if status["exec_info"]["queue_remaining"] == 0:
            return
        start = len(self.watcher.frames)
        await self.watcher.wait_for(
            lambda f: f.type == "status" and f.data["status"]["exec_info"]["queue_remaining"] == 0,
            within=60,
            start=start,
        )

    def _compare_http(
        self, request: dict[str, Any], path: str, expected: dict[str, Any], reply: Reply
    ) -> None:
        label = f"{request['method']} {request['path']} {request.get('note', '')}".strip()
        got = (reply.status, reply.content_type)
        want = (expected["status"], expected.get("content_type"))
        if got != want:
            self.problems.append(f"{label}: status/content type {got} != {want}")
            return
        if "json" in expected:
            actual = self.back(reply.json())
            if path.rstrip("/").endswith("system_stats"):
                if shape(expected["json"]) != subset(shape(actual), shape(expected["json"])):
                    self.problems.append(f"{label}: system_stats shape differs")
            elif normalize(actual) != normalize(expected["json"]):
                got, want = normalize(actual), normalize(expected["json"])
                self.problems.append(f"{label}: json differs\n  got  {got}\n  want {want}")
            if isinstance(actual, dict) and "number" in actual and "number" in expected["json"]:
                self.numbers.append((expected["json"]["number"], actual["number"]))
        elif "text" in expected and reply.text != expected["text"]:
            self.problems.append(f"{label}: text {reply.text!r} != {expected['text']!r}")
        if "png" in expected and png_size(reply.body) != expected["png"]:
            self.problems.append(f"{label}: png {png_size(reply.body)} != {expected['png']}")
        for header, value in expected.get("headers", {}).items():
            if normalize(reply.headers.get(header)) != normalize(value):
                self.problems.append(f"{label}: header {header} {reply.headers.get(header)!r}")
        self._check_note(label, expected.get("note", ""), reply)

    def _check_note(self, label: str, note: str, reply: Reply) -> None:
        if "node classes" in note:
            keys = ast.literal_eval(note.split("per-class keys ")[1])
            if set(reply.json()["KSampler"]) != set(keys):
                self.problems.append(f"{label}: KSampler keys {sorted(reply.json()['KSampler'])}")
        elif "JSON object with 1 entry" in note:
            entries = reply.json()
            if len(entries) != 1 or set(next(iter(entries.values()))) != {
                "meta",
                "outputs",
                "prompt",
                "status",
            }:
                self.problems.append(f"{label}: {list(entries)}")
        elif "history entry present, status success" in note:
            entries = reply.json()
            if (
                len(entries) != 1
                or next(iter(entries.values()))["status"]["status_str"] != "success"
            ):
                self.problems.append(f"{label}: no successful entry")

    async def _finish(self) -> None:
        for name, socket in self.sockets.items():
            frames = [self.back(describe_frame(f)) for f in socket.frames]
            got, got_floating = split_floating(normalize(frames))
            want, want_floating = split_floating(normalize(self.expected.get(name, [])))
            if got != want:
                self.problems.append(frame_diff(name, got, want))
            if got_floating != want_floating:
                self.problems.append(
                    f"socket {name}: concurrent status {got_floating} != {want_floating}"
                )

    def _check_numbers(self) -> None:
        for (first_want, first_got), (want, got) in zip(
            self.numbers, self.numbers[1:], strict=False
        ):
            if want - first_want != got - first_got:
                self.problems.append(f"prompt numbers advance differently: {self.numbers}")
                return


async def replay(client: ComfyClient, transcript: dict[str, Any], input_dir: Path) -> list[str]:
    """Replay `transcript` against `client`'s server; the list of differences (empty = same)."""
    return await Replayer(client, transcript, input_dir).run()
