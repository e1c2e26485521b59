"""The aiohttp application: every route under `/` and `/api/`, the Origin check, and `serve()`.

`create_app(config)` gives an application for in-process tests (aiohttp's TestServer); `serve`
runs it on a TCP port until SIGTERM/SIGINT, which is what `python -m comfyline.comfyui_sim` does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
import threading
import urllib.parse
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from comfyline.comfyui_sim.config import SIMULATOR_NAME, Release, SimConfig
from comfyline.comfyui_sim.files import file_routes
from comfyline.comfyui_sim.jobs import jobs_routes
from comfyline.comfyui_sim.lazy import warm_up
from comfyline.comfyui_sim.routes import executions, routes
from comfyline.comfyui_sim.simulator import SIMULATOR, Simulator

log = logging.getLogger("comfyui_sim")


async def _is_loopback(host: str | None) -> bool:
    """Like ComfyUI's `is_loopback`: an IP literal, or a name that resolves only to loopback."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout=2.0
        )
    except (OSError, TimeoutError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _port(parts: urllib.parse.SplitResult | urllib.parse.ParseResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def origin_middleware(release: Release) -> Middleware:
    """403 when `Origin` names another host than `Host` (checked only for loopback hosts), and
    in the newer releases' mode also for `Sec-Fetch-Site: cross-site`."""

    @web.middleware
    async def check_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        host, origin = request.headers.get("Host"), request.headers.get("Origin")
        if host is not None and origin is not None:
            host_domain: str | None = host.lower()
            parsed = urllib.parse.urlparse(origin)
            origin_domain: str | None = parsed.netloc.lower()
            host_parsed = urllib.parse.urlsplit("//" + host.lower())
            loopback = await _is_loopback(host_parsed.hostname)
            # A side without a port is compared by host name alone, as ComfyUI does.
            if _port(parsed) is None:
                host_domain = host_parsed.hostname
            if _port(host_parsed) is None:
                origin_domain = parsed.hostname
            if loopback and host_domain and origin_domain and host_domain != origin_domain:
                log.warning(
                    "request with non matching host and origin %s != %s, returning 403",
                    host_domain,
                    origin_domain,
                )
                return web.Response(status=403)
        if release.checks_sec_fetch_site and request.headers.get("Sec-Fetch-Site") == "cross-site":
            return web.Response(status=403)
        if request.method == "OPTIONS":
            return web.Response()
        return await handler(request)

    return check_origin


async def _static_fallback(request: web.Request) -> web.Response:
    """What ComfyUI's static route answers for an unknown GET path: 404, empty octet-stream."""
    return web.Response(status=404, body=b"", content_type="application/octet-stream")


def _add_routes(app: web.Application, release: Release) -> None:
    tables = [routes, file_routes, *([jobs_routes] if release.has_jobs_api else [])]
    defs = [route for table in tables for route in table if isinstance(route, web.RouteDef)]
    for route in defs:
        app.router.add_route(route.method, "/api" + route.path, route.handler, **route.kwargs)
    for route in defs:
        app.router.add_route(route.method, route.path, route.handler, **route.kwargs)
    app.router.add_route("GET", "/sim/executions", executions)
    app.router.add_route("GET", "/{tail:.*}", _static_fallback)


def create_app(config: SimConfig | None = None, argv: Sequence[str] = ()) -> web.Application:
    """A fresh simulator as an aiohttp application (the executor thread starts with the app)."""
    config = config or SimConfig()
    sim = Simulator(config, argv)
    app = web.Application(
        client_max_size=config.max_upload_size, middlewares=[origin_middleware(config.release)]
    )
    app[SIMULATOR] = sim
    _add_routes(app, config.release)

    async def on_startup(_: web.Application) -> None:
        await sim.hub.start()
        sim.executor.start()
        threading.Thread(target=warm_up, name="comfyui-sim-warmup", daemon=True).start()

    async def on_shutdown(_: web.Application) -> None:
        await sim.hub.stop()

    async def on_cleanup(_: web.Application) -> None:
        await asyncio.to_thread(sim.executor.stop)

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


async def serve(config: SimConfig, argv: Sequence[str] = ()) -> None:
    """Listen until SIGTERM or SIGINT; the log says loudly that this is not ComfyUI."""
    if config.startup_delay > 0:
        log.info("startup delay: %.2f s", config.startup_delay)
        await asyncio.sleep(config.startup_delay)
    app = create_app(config, argv)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, shutdown_timeout=2.0)
    await site.start()
    port = config.port
    for address in runner.addresses:
        if isinstance(address, tuple):
            port = address[1]
    sim = app[SIMULATOR]
    log.info(
        "%s (NOT ComfyUI) playing ComfyUI %s, listening on http://%s:%d, data dir %s",
        SIMULATOR_NAME,
        config.release.version,
        config.host,
        port,
        sim.dirs.root,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("%s stopping", SIMULATOR_NAME)
        await runner.cleanup()
