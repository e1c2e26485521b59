"""``/v1/files``: a fresh output's bytes, behind a signed link (see ..links)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import RedirectResponse, Response

from ..deps import Gateway, GatewayDep
from ..errors import error_responses
from ..links import FILES_PATH

router = APIRouter(prefix=FILES_PATH, tags=["jobs"])


@router.get(
    "/{token}",
    summary="A fresh output's bytes (a signed link; no API key)",
    response_class=Response,
    responses={
        200: {"description": "the output's bytes", "content": {"image/png": {}}},
        307: {"description": "to a presigned S3 link, once the output is no longer fresh"},
        **error_responses(403, 422),
    },
)
async def fresh_file(
    token: str,
    gw: GatewayDep,
    expires: Annotated[int, Query(ge=0)],
    signature: Annotated[str, Query(max_length=64)],
) -> Response:
    """The link an output carries for a few minutes after its job ended: its bytes, served
    from JetStream; a `307` to S3 once they have moved there. `403 forbidden` for a link that
    is not signed by the gateway or has expired."""
    return await fresh_file_response(gw, token, expires, signature)


async def fresh_file_response(gw: Gateway, token: str, expires: int, signature: str) -> Response:
    """The answer to a fresh output's link (the route's, and its lane's: see ..lane)."""
    links = gw.views.output_links
    key, left = links.check(token, expires, signature)
    name = key.rsplit("/", 1)[-1]
    found = await links.read(key)
    if found is None:
        return RedirectResponse(gw.store.presign_get(key, left, filename=name), status_code=307)
    return Response(
        found.data,
        media_type=found.content_type,
        headers={
            "Content-Disposition": f'inline; filename="{name}"',
            "Cache-Control": f"private, max-age={min(left, 3600)}",
        },
    )
