"""The uniform service lifecycle: ``python -m comfyline.<service>`` runs ``main`` on one event loop.

On SIGTERM or SIGINT a stop event is set; the service stops fetching, finishes or naks in-flight
work within its grace period, then drains its NATS connection.

Services run on uvloop where it is installed: every job crosses the gateway, the orchestrator
and a worker in series, and uvloop's cheaper callbacks and socket I/O shorten each of those hops.
``COMFYLINE_EVENT_LOOP=asyncio`` runs the standard loop instead (for debugging).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def install_stop_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM/SIGINT (a second signal is left to the default handler)."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("stopping on signal", extra={"signal": sig.name})
        stop.set()
        loop.remove_signal_handler(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop, unless ``COMFYLINE_EVENT_LOOP=asyncio`` or uvloop is missing (then None)."""
    if os.environ.get("COMFYLINE_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - not installable on every platform
        return None
    return uvloop.new_event_loop


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a service's ``main(stop)`` until it returns (it returns once ``stop`` is set)."""

    async def runner() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await main(stop)

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as loop_runner:
            loop_runner.run(runner())
    except KeyboardInterrupt:  # pragma: no cover - second Ctrl-C
        pass
