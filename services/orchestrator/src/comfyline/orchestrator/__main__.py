"""``python -m comfyline.orchestrator``: configure from ``ORCHESTRATOR_*`` and run until SIGTERM."""

from __future__ import annotations

import asyncio

from comfyline.runtime import Bus, LiveCatalogue, start

from .service import Orchestrator
from .settings import Settings


async def body(bus: Bus, catalogue: LiveCatalogue, settings: Settings, stop: asyncio.Event) -> None:
    """Run the orchestrator until ``stop`` is set."""
    await Orchestrator(bus, catalogue, settings).run(stop)


def main() -> None:
    """The console entry point."""
    start("orchestrator", Settings, body)


if __name__ == "__main__":
    main()
