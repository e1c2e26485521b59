"""``python -m comfyline.provider``: serve the catalogue's hosted-provider models."""

from __future__ import annotations

import asyncio

from comfyline.runtime import Bus, LiveCatalogue, ObjectStore, start

from .settings import Settings
from .worker import ProviderWorker


async def body(bus: Bus, models: LiveCatalogue, settings: Settings, stop: asyncio.Event) -> None:
    """Run one provider worker until ``stop`` is set (SIGTERM/SIGINT)."""
    await ProviderWorker(bus, ObjectStore(settings.s3), models, settings).run(stop)


def cli() -> None:
    """The console entry point."""
    start("provider", Settings, body, client=lambda s: f"provider-{s.worker_id}")


if __name__ == "__main__":
    cli()
