"""Following a job (or an owner's jobs): replay what was missed, then join the live feed.

The listener is registered, and the gateway's feed of events subscribed, *before* the replay
starts, so nothing published in between is lost; events the replay already gave are dropped
from the live queue by their stream sequence. The same generator serves SSE and WebSocket
clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from comfyline.contracts import TERMINAL_EVENTS, JobEvent

from .fanout import Fanout
from .joblog import JobLog


@dataclass(frozen=True, slots=True)
class Tick:
    """Nothing happened for a heartbeat interval (SSE sends a comment, WS a ping)."""


class Overflow(Exception):
    """The client read too slowly; it should reconnect with its last event id."""


async def follow(
    log: JobLog,
    fanout: Fanout,
    *,
    job_id: str | None = None,
    owner: str | None = None,
    after: int | None = None,
    heartbeat_s: float = 15.0,
) -> AsyncIterator[tuple[int, JobEvent] | Tick]:
    """Yield ``(sequence, event)`` in order, and a :class:`Tick` when idle.

    One job: replays from ``after`` (or from its first event) and stops after the terminal
    event. One owner: replays from ``after`` when given (else live only) and never stops.
    """
    assert (job_id is None) != (owner is None), "follow one job or one owner"
    last = after or 0
    with fanout.listen(job_id=job_id, owner=owner) as listener:
        await fanout.live()
        if job_id is not None or after is not None:
            subject = (
                log.names.job_events_filter(job_id)
                if job_id is not None
                else log.names.owner_events_filter(owner or "")
            )
            async with aclosing(log.replay(subject, last)) as replayed:
                async for seq, event in replayed:
                    last = max(last, seq)
                    yield seq, event
                    if job_id is not None and event.kind in TERMINAL_EVENTS:
                        return
        while True:
            if listener.overflowed and listener.queue.empty():
                raise Overflow("the client read too slowly; reconnect with Last-Event-ID")
            try:
                async with asyncio.timeout(heartbeat_s):  # (no task per wait, as wait_for makes)
                    seq, event = await listener.queue.get()
            except TimeoutError:
                yield Tick()
                continue
            if seq <= last:
                continue
            last = seq
            yield seq, event
            if job_id is not None and event.kind in TERMINAL_EVENTS:
                return
