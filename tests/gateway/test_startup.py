"""The gateway's start: ``create_app(on_started=...)`` is called once its state is built.

``python -m comfyline.gateway`` passes :func:`comfyline.runtime.settle_heap` there, so what the
gateway holds for its life is out of later collections before the first request."""

from __future__ import annotations

import httpx

from comfyline.gateway import Settings, create_app
from comfyline.gateway.deps import Gateway


async def test_on_started_runs_once_with_the_gateway_built_before_any_request(
    settings: Settings,
) -> None:
    seen: list[object] = []
    app = create_app(settings, on_started=lambda: seen.append(app.state.gateway))
    async with app.router.lifespan_context(app):
        assert len(seen) == 1 and isinstance(seen[0], Gateway)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            assert (await client.get("/healthz")).status_code == 200
    assert len(seen) == 1
