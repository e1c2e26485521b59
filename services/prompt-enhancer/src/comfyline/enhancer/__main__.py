"""``python -m comfyline.enhancer``: serve ``enhance.v1`` and ``policy.v1`` until SIGTERM."""

from __future__ import annotations

import asyncio

from comfyline.runtime import Bus, LiveCatalogue, start

from .service import Enhancer
from .settings import Settings


async def body(bus: Bus, catalogue: LiveCatalogue, settings: Settings, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set, then finish in-flight requests."""
    await Enhancer(bus, catalogue, settings).run(stop)


def cli() -> None:
    """The console entry point."""
    start("enhancer", Settings, body)


if __name__ == "__main__":
    cli()
