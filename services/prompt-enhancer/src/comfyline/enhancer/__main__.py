"""``python -m comfyline.enhancer``: serve ``enhance.v1`` and ``policy.v1`` until SIGTERM."""

from __future__ import annotations

import asyncio

from comfyline.catalogue import Catalogue
from comfyline.runtime import (
    Bus,
    LiveCatalogue,
    run,
    setup_logging,
    setup_tracing,
    shutdown_tracing,
)

from .service import Enhancer
from .settings import Settings


async def main(stop: asyncio.Event, settings: Settings | None = None) -> None:
    """Connect, serve until ``stop`` is set, finish in-flight requests, drain."""
    settings = settings or Settings()
    setup_logging("enhancer", settings.log_level, settings.log_json)
    setup_tracing("enhancer", settings.otel)
    folder = settings.catalogue_dir
    base = Catalogue.from_dir(folder) if folder else Catalogue.builtin()
    bus = await Bus.connect(settings.nats, settings.names, "enhancer")
    try:
        async with LiveCatalogue(bus, base, settings.models_refresh_s) as catalogue:
            await Enhancer(bus, catalogue, settings).run(stop)
    finally:
        await bus.close()
        shutdown_tracing()


def cli() -> None:
    """The console entry point."""
    run(main)


if __name__ == "__main__":
    cli()
