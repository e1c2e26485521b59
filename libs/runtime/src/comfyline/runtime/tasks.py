"""Stopping background tasks for certain, and leaving ones whose outcome no one needs.

On Python 3.11 a cancelled task can carry on: ``asyncio.wait_for`` returns the inner result and
drops the cancellation when both happen in the same loop iteration (nats.py awaits every request,
and so every JetStream publish, through ``wait_for``). A loop that is told to stop by one
``cancel()`` then keeps running, and whoever awaits it waits forever. :func:`cancel_and_wait`
cancels again until the task has really ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_S = 0.05


def retrieve(future: asyncio.Future[Any]) -> None:
    """A done callback for a task whose failure says nothing more than its end (an unsubscribe
    or a wait on a connection that is gone): its exception is retrieved, so none is reported
    as never retrieved."""
    if not future.cancelled():
        future.exception()


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], every: float = RECANCEL_S) -> None:
    """Cancel ``tasks`` and return once every one has ended, cancelling again each ``every``
    seconds while any still runs. Their results and exceptions are dropped; a cancel of the
    caller itself still propagates."""
    tasks = list(tasks)
    waiting = {task for task in tasks if not task.done()}
    while waiting:
        for task in waiting:
            task.cancel()
        _, waiting = await asyncio.wait(waiting, timeout=every)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it as never retrieved
