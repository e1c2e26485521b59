"""The uniform service lifecycle: ``python -m comfyline.<service>`` runs ``asyncio.run(main())``.

On SIGTERM or SIGINT a stop event is set; the service stops fetching, finishes or naks in-flight
work within its grace period, then drains its NATS connection.
"""

from __future__ import annotations

import asyncio
import logging
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


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a service's ``main(stop)`` until it returns (it returns once ``stop`` is set)."""

    async def runner() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await main(stop)

    try:
        asyncio.run(runner())
    except KeyboardInterrupt:  # pragma: no cover - second Ctrl-C
        pass
