"""``/playground``: a small page that submits a job, follows its SSE and shows the result."""

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
