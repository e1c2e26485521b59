"""``python -m comfyline.provider``: serve the catalogue's hosted-provider models."""

from __future__ import annotations

import asyncio

from comfyline.catalogue import Catalogue
from comfyline.runtime import (
    Bus,
    LiveCatalogue,
    ObjectStore,
    run,
    setup_logging,
    setup_tracing,
    shutdown_tracing,
)

from .settings import Settings
from .worker import ProviderWorker


async def main(stop: asyncio.Event, settings: Settings | None = None) -> None:
    """Run one provider worker until ``stop`` is set (SIGTERM/SIGINT)."""
    settings = settings or Settings()
    setup_logging("provider", settings.log_level, settings.log_json)
    setup_tracing("provider", settings.otel)
    bus = await Bus.connect(settings.nats, settings.names, f"provider-{settings.worker_id}")
    try:
        async with LiveCatalogue(bus, Catalogue.builtin(), settings.models_refresh_s) as models:
            await ProviderWorker(bus, ObjectStore(settings.s3), models, settings).run(stop)
    finally:
        await bus.close()
        shutdown_tracing()


def cli() -> None:
    """The console entry point."""
    run(main)


if __name__ == "__main__":
    cli()
