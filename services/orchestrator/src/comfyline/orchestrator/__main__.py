"""``python -m comfyline.orchestrator``: configure from ``ORCHESTRATOR_*`` and run until SIGTERM."""

from __future__ import annotations

import asyncio
import functools

from comfyline.catalogue import Catalogue
from comfyline.runtime import (
    Bus,
    LiveCatalogue,
    run,
    setup_logging,
    setup_tracing,
    shutdown_tracing,
)

from .service import Orchestrator
from .settings import Settings


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Connect, run the orchestrator until ``stop`` is set, then drain and close."""
    folder = settings.catalogue_dir
    base = Catalogue.from_dir(folder) if folder else Catalogue.builtin()
    bus = await Bus.connect(settings.nats, settings.names, "orchestrator")
    try:
        async with LiveCatalogue(bus, base, settings.models_refresh_s) as catalogue:
            await Orchestrator(bus, catalogue, settings).run(stop)
    finally:
        await bus.close()
        shutdown_tracing()


def main() -> None:
    """Build the settings once, set up logs and tracing, and run."""
    settings = Settings()
    setup_logging("orchestrator", settings.log_level, settings.log_json)
    setup_tracing("orchestrator", settings.otel)
    run(functools.partial(serve, settings))


if __name__ == "__main__":
    main()
