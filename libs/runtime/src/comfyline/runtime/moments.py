"""When a worker's background work may run without slowing a waiting client.

A job's end is followed at once by its client's answer and download (and often its next
submission): a few round trips across the services, each slowed by any CPU spent beside it. A
worker's background work (copying fresh outputs to S3, removing a run's folder from ComfyUI's
output folder) has minutes to be done, so it waits for a moment that costs no one: while a run
is in progress on one of the worker's GPU servers (the CPU then waits on the GPU), or once it has
waited ``defer_s``, whichever comes first. A worker that stops hurries: the rest goes at once.

A run is in progress from its prompt's post until it reports its first output (or ends): the
run whose end made the work has left its mark by then, so its own client is never slowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class Moments:
    """The moments of one worker's background work (see the module)."""

    def __init__(self, defer_s: float = 0.25) -> None:
        self.defer_s = defer_s
        self._runs = 0
        self._hurried = False
        self._open = asyncio.Event()  # set while a run is marked, or once hurried

    def mark(self) -> RunMark:
        """A mark for one run on a GPU server (see :class:`RunMark`)."""
        return RunMark(self)

    def hurry(self) -> None:
        """Let everything go at once from now on (the worker is stopping)."""
        self._hurried = True
        self._open.set()

    async def wait(self, since: float | None = None) -> None:
        """Return once a run is marked, the worker hurries, or ``defer_s`` have passed since
        ``since`` (epoch seconds; now when None, and never more than ``defer_s`` from now)."""
        if self._open.is_set() or self.defer_s <= 0:
            return
        left = self.defer_s
        if since is not None:
            left = min(left, self.defer_s - (time.time() - since))
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._open.wait(), left)

    def _marked(self, change: int) -> None:
        self._runs += change
        if self._runs:
            self._open.set()
        elif not self._hurried:
            self._open.clear()


class RunMark:
    """One run's part in the moments: entered when its prompt is posted, left when it reports
    its first output or ends. Entering or leaving twice changes nothing."""

    def __init__(self, moments: Moments) -> None:
        self._moments = moments
        self._in = False

    def enter(self) -> None:
        if not self._in:
            self._in = True
            self._moments._marked(1)

    def leave(self) -> None:
        if self._in:
            self._in = False
            self._moments._marked(-1)
