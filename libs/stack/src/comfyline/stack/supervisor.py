"""Keeping the local stack up: a part that exits on its own is started again, with a backoff.

``comfyline up`` asks :meth:`Supervisor.check` twice a second. A crashed part is restarted after
1 s, then 2, 4, 8 and 16 s on further crashes; a part that crashes ``max_crashes`` times within
``window_s`` makes the whole stack stop (something is wrong that restarting will not fix). Each
restart is said on stderr and recorded (PID and restart count) in ``stack.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .servers import ChildProcess

BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass
class _Crashes:
    times: list[float] = field(default_factory=list)
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class Supervisor:
    """Restarts crashed children with a bounded backoff; gives up on repeated crashes."""

    children: Callable[[], dict[str, ChildProcess]]
    say: Callable[[str], None]
    max_crashes: int = 5
    window_s: float = 120.0
    clock: Callable[[], float] = time.monotonic
    _crashes: dict[str, _Crashes] = field(default_factory=dict)

    @property
    def restarts(self) -> dict[str, int]:
        """How many times each part was restarted."""
        return {name: c.restarts for name, c in self._crashes.items() if c.restarts}

    def check(self) -> str | None:
        """Restart what is due; the name of a part that crashed too often (stop then), or None."""
        now = self.clock()
        for name, child in self.children().items():
            if child.alive():
                continue
            crashes = self._crashes.setdefault(name, _Crashes())
            if crashes.restart_at is None:
                crashes.times = [t for t in crashes.times if now - t < self.window_s] + [now]
                if len(crashes.times) >= self.max_crashes:
                    self.say(
                        f"{name} stopped {len(crashes.times)} times in {self.window_s:g} s; "
                        "stopping everything"
                    )
                    return name
                delay = BACKOFF_S[min(len(crashes.times) - 1, len(BACKOFF_S) - 1)]
                code = child.process.returncode if child.process is not None else None
                self.say(
                    f"{name} stopped unexpectedly (exit code {code}); restarting in {delay:g} s "
                    f"(see {child.log_path})"
                )
                crashes.restart_at = now + delay
            elif now >= crashes.restart_at:
                child.stop(grace_s=1)
                child.spawn()
                crashes.restart_at = None
                crashes.restarts += 1
                self.say(f"{name} restarted (pid {child.pid})")
        return None
