"""``/playground``: one static page (no build step) that runs any model from a form made from its
schema, uploads its files, follows the job live, and lists the caller's jobs."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
# Read once at import: a few kilobytes, and no file I/O on the event loop per request.
PAGE = resources.files("comfyline.gateway").joinpath("static/playground.html").read_text()


@router.get("/playground")
async def playground() -> HTMLResponse:
    """The page (static; it talks to this API with the key the user types in)."""
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-cache"})
