"""One live subscription to every job event per gateway process, fanned out in memory.

Listeners (an SSE stream, a WebSocket, a ``Prefer: wait``) register for one job or one owner and
receive ``(stream_sequence, JobEvent)`` pairs through a bounded queue; no server-side consumer
is made per listener. A listener that falls too far behind is marked ``overflowed`` and closed:
its client reconnects with ``Last-Event-ID`` and the replay fills the gap exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from comfyline.contracts import JobEvent
from comfyline.runtime import Bus

from .joblog import parse_subject
from .mailbox import Mailbox

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Listener:
    """One subscriber's queue of live events."""

    job_id: str | None
    owner: str | None
    queue: Mailbox[tuple[int, JobEvent]] = field(default_factory=lambda: Mailbox(1000))
    overflowed: bool = False

    def offer(self, item: tuple[int, JobEvent]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


class Fanout:
    """Delivers each live ``JOBS`` event to the listeners of its job and of its owner."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._by_job: dict[str, set[Listener]] = defaultdict(set)
        self._by_owner: dict[str, set[Listener]] = defaultdict(set)
        self._sub: object | None = None
        self.last_seq = 0

    async def start(self) -> None:
        """Subscribe to new events (an ordered consumer: gaps are healed by the client)."""
        self._sub = await self.bus.js.subscribe(
            self.bus.names.all_job_events(),
            stream=self.bus.names.stream("JOBS"),
            cb=self._on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            inactive_threshold=60,
        )

    async def stop(self) -> None:
        """Unsubscribe; listeners simply stop receiving."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()  # type: ignore[attr-defined]

    async def _on_message(self, msg: Msg) -> None:
        try:
            owner, job_id, _ = parse_subject(msg.subject)
            seq = int(msg.metadata.sequence.stream)
        except (ValueError, AttributeError):
            log.warning(
                "ignoring a message that is not a job event", extra={"subject": msg.subject}
            )
            return
        self.last_seq = max(self.last_seq, seq)
        listeners = (*self._by_job.get(job_id, ()), *self._by_owner.get(owner, ()))
        if not listeners:
            return  # most events have no listener here: they are not even parsed
        try:
            event = JobEvent.from_bytes(msg.data)
        except ValueError:
            log.warning("ignoring a malformed job event", extra={"subject": msg.subject})
            return
        for listener in listeners:
            listener.offer((seq, event))

    @contextlib.contextmanager
    def listen(self, job_id: str | None = None, owner: str | None = None) -> Iterator[Listener]:
        """Receive the live events of one job, or of every job of one owner, while inside."""
        listener = Listener(job_id=job_id, owner=owner)
        if job_id:
            self._by_job[job_id].add(listener)
        if owner:
            self._by_owner[owner].add(listener)
        try:
            yield listener
        finally:
            if job_id:
                self._discard(self._by_job, job_id, listener)
            if owner:
                self._discard(self._by_owner, owner, listener)

    @staticmethod
    def _discard(index: dict[str, set[Listener]], key: str, listener: Listener) -> None:
        group = index.get(key)
        if group is not None:
            group.discard(listener)
            if not group:
                del index[key]

    @property
    def listeners(self) -> int:
        """How many listeners are registered (for status and tests)."""
        return sum(len(g) for g in self._by_job.values()) + sum(
            len(g) for g in self._by_owner.values()
        )
