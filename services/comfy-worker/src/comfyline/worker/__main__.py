"""``python -m comfyline.worker``: connect, serve the configured ComfyUI servers, drain on stop."""

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

from .service import Worker
from .settings import Settings


async def main(stop: asyncio.Event, settings: Settings | None = None) -> None:
    """Run one worker until ``stop`` is set (SIGTERM/SIGINT)."""
    settings = settings or Settings()
    setup_logging("worker", settings.log_level, settings.log_json)
    setup_tracing("worker", settings.otel)
    bus = await Bus.connect(settings.nats, settings.names, f"worker-{settings.worker_id}")
    try:
        async with LiveCatalogue(bus, Catalogue.builtin(), settings.models_refresh_s) as models:
            await Worker(bus, ObjectStore(settings.s3), models, settings).run(stop)
    finally:
        await bus.close()
        shutdown_tracing()


def cli() -> None:
    """The console entry point."""
    run(main)


if __name__ == "__main__":
    cli()
