"""The uniform service lifecycle: ``python -m comfyline.<service>`` runs ``main`` on one event loop.

On SIGTERM or SIGINT a stop event is set; the service stops fetching, finishes or naks in-flight
work within its grace period, then drains its NATS connection.

Services run on uvloop where it is installed: every job crosses the gateway, the orchestrator
and a worker in series, and uvloop's cheaper callbacks and socket I/O shorten each of those hops.
``COMFYLINE_EVENT_LOOP=asyncio`` runs the standard loop instead (for debugging).

What a service holds for its whole life (its modules, the app and schemas it builds, its
catalogue) is moved out of the garbage collector's sight once the service has started
(:func:`settle_heap`): a full collection otherwise walks all of it, and in a running service
that was a pause of 35-55 ms every few hundred jobs, in whichever job it fell.
"""

from __future__ import annotations

import asyncio
import gc
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


def settle_heap() -> None:
    """Collect what starting left behind, then keep every object alive now out of later
    collections (``gc.freeze``): they live as long as the service, and a full collection
    need not walk them. Called once the imports are done and again once the service is up;
    what it holds then is never collected, so it is called before any request is served."""
    gc.collect()
    gc.freeze()


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a service's ``main(stop)`` until it returns (it returns once ``stop`` is set)."""

    async def runner() -> None:
        settle_heap()
        stop = asyncio.Event()
        install_stop_signals(stop)
        await main(stop)

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as loop_runner:
            loop_runner.run(runner())
    except KeyboardInterrupt:  # pragma: no cover - second Ctrl-C
        pass
