"""The one way a Comfyline service starts: ``start(name, Settings, body)``.

Every backend service's ``__main__`` is one call: settings are built once from the environment
(an error names the setting and exits), logs and tracing are set up, the service connects to NATS,
reads the model catalogue (its ``catalogue_dir`` or the built-in one, then live from the models
bucket), serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics_port`` when set, and runs
``body`` until SIGTERM/SIGINT; then it drains and closes in reverse order.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import ValidationError

from comfyline.catalogue import Catalogue

from .bus import Bus
from .lifecycle import run, settle_heap
from .logs import setup_logging
from .metrics import serve_metrics, stop_metrics
from .models import LiveCatalogue
from .settings import ServiceSettings
from .tracing import setup_tracing, shutdown_tracing

S = TypeVar("S", bound=ServiceSettings)
#: A service's body: runs until ``stop`` is set.
Body = Callable[[Bus, LiveCatalogue, S, asyncio.Event], Awaitable[None]]


def load_settings(name: str, settings_class: type[S]) -> S:
    """The service's settings from its environment; a bad one exits with what is wrong."""
    try:
        return settings_class()
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in e.errors()
        )
        raise SystemExit(f"comfyline.{name}: invalid settings: {problems}") from None


async def serve(
    name: str, settings: S, body: Body[S], stop: asyncio.Event, client: str | None = None
) -> None:
    """Connect, run ``body`` until ``stop`` is set, then stop metrics, drain and close."""
    folder = settings.catalogue_dir
    base = Catalogue.from_dir(folder) if folder else Catalogue.builtin()
    bus = await Bus.connect(settings.nats, settings.names, client or name)
    metrics = None
    try:
        if settings.metrics_port is not None:
            metrics = await serve_metrics(
                settings.metrics_host, settings.metrics_port, lambda: bus.nc.is_connected
            )
        async with LiveCatalogue(bus, base, settings.models_refresh_s) as catalogue:
            settle_heap()
            await body(bus, catalogue, settings, stop)
    finally:
        await stop_metrics(metrics)
        await bus.close()
        shutdown_tracing()


def start(
    name: str, settings_class: type[S], body: Body[S], client: Callable[[S], str] | None = None
) -> None:
    """``python -m comfyline.<name>``: build settings, set up logs and tracing, run ``body``."""
    settings = load_settings(name, settings_class)
    setup_logging(name, settings.log_level, settings.log_json)
    setup_tracing(name, settings.otel)
    label = client(settings) if client else name
    run(functools.partial(serve, name, settings, body, client=label))
