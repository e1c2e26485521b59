"""`POST /upload/image` and `GET /view`, with ComfyUI's naming and path rules.

Uploads: same name + same bytes keeps the name, other bytes get `name (1).ext` unless
`overwrite` is "true" or "1"; a `../` subfolder or a missing `image` field is a 400 with no body.
Views stream the file (`FileResponse`), never read it whole; `..` in the name is 400, a subfolder
escaping its folder 403, an unknown type 400, anything missing 404.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web

from comfyline.comfyui_sim.paths import DataDirs
from comfyline.comfyui_sim.routes import sim_of

file_routes = web.RouteTableDef()
FORCED_DOWNLOAD = {
    "text/html",
    "text/html-sandboxed",
    "application/xhtml+xml",
    "text/javascript",
    "text/css",
}


def _same_bytes(path: Path, data: bytes) -> bool:
    return hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()


def _store(
    upload_dir: Path, subfolder: str, filename: str, upload: BinaryIO, overwrite: bool
) -> str | None:
    """Pick the name (renaming on a clash with other bytes) and write unless it is a duplicate;
    None when the subfolder points outside the upload folder."""
    folder = Path(os.path.join(upload_dir, os.path.normpath(subfolder)))
    target = os.path.abspath(os.path.join(folder, filename))
    if os.path.commonpath((str(upload_dir), target)) != str(upload_dir):
        return None
    data = upload.read()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    stem, ext = os.path.splitext(filename)
    if not overwrite:
        index = 1
        while path.exists():
            if _same_bytes(path, data):
                return filename
            filename = f"{stem} ({index}){ext}"
            path = folder / filename
            index += 1
    path.write_bytes(data)
    return filename


@file_routes.post("/upload/image")
async def upload_image(request: web.Request) -> web.Response:
    sim = sim_of(request)
    post = await request.post()
    image: Any = post.get("image")
    overwrite = post.get("overwrite")
    upload_type = post.get("type")
    kind = upload_type if isinstance(upload_type, str) else "input"
    upload_dir = sim.dirs.by_type(kind)
    if upload_dir is None:
        raise ValueError(f"cannot access local variable 'type_dir' (unknown type {kind!r})")
    if not image:
        return web.Response(status=400)
    if isinstance(image, str):
        raise AttributeError("'str' object has no attribute 'file'")
    filename = image.filename
    if not filename:
        return web.Response(status=400)
    subfolder_value = post.get("subfolder", "")
    subfolder = subfolder_value if isinstance(subfolder_value, str) else ""
    replace = overwrite in ("true", "1")
    name = await asyncio.to_thread(_store, upload_dir, subfolder, filename, image.file, replace)
    if name is None:
        return web.Response(status=400)
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})


def _locate(dirs: DataDirs, query: Mapping[str, str]) -> int | str:
    """Resolve a `/view` query to a file path, or to the status code ComfyUI answers."""
    if "filename" not in query:
        return 404
    filename, folder = dirs.annotated(query["filename"])
    if not filename:
        return 400
    if filename[0] == "/" or ".." in filename:
        return 400
    if folder is None:
        folder = dirs.by_type(query.get("type", "output"))
    if folder is None:
        return 400
    output_dir = str(folder)
    if "subfolder" in query:
        full = os.path.join(output_dir, query["subfolder"])
        if os.path.commonpath((os.path.abspath(full), output_dir)) != output_dir:
            return 403
        output_dir = full
    path = os.path.join(output_dir, os.path.basename(filename))
    return path if os.path.isfile(path) else 404


@file_routes.get("/view")
async def view(request: web.Request) -> web.StreamResponse:
    sim = sim_of(request)
    if sim.config.view_delay > 0:
        await asyncio.sleep(sim.config.view_delay)
    found = await asyncio.to_thread(_locate, sim.dirs, request.rel_url.query)
    if isinstance(found, int):
        return web.Response(status=found)
    filename = os.path.basename(found)
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if content_type in FORCED_DOWNLOAD:
        content_type = "application/octet-stream"
    headers = {"Content-Disposition": f'filename="{filename}"', "Content-Type": content_type}
    return web.FileResponse(found, headers=headers)
