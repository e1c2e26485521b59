"""``python -m comfyline.worker``: connect, serve the configured ComfyUI servers, drain on stop."""

from __future__ import annotations

import asyncio

from comfyline.runtime import Bus, LiveCatalogue, ObjectStore, start

from .service import Worker
from .settings import Settings


async def body(bus: Bus, models: LiveCatalogue, settings: Settings, stop: asyncio.Event) -> None:
    """Run one worker until ``stop`` is set (SIGTERM/SIGINT)."""
    await Worker(bus, ObjectStore(settings.s3), models, settings).run(stop)


def cli() -> None:
    """The console entry point."""
    start("worker", Settings, body, client=lambda s: f"worker-{s.worker_id}")


if __name__ == "__main__":
    cli()
