"""One live subscription to every job event per gateway process, fanned out in memory.

Listeners (an SSE stream, a WebSocket) register for one job or one owner and receive
``(stream_sequence, JobEvent)`` pairs through a bounded queue; no server-side consumer is made
per listener. A listener that falls too far behind is marked ``overflowed`` and closed: its
client reconnects with ``Last-Event-ID`` and the replay fills the gap exactly.

The feed of events is subscribed while someone follows them: the first listener's
:meth:`Fanout.live` subscribes it (a follower awaits that before it replays, so nothing falls
between the replay and the feed), and it is dropped once no listener has needed it for
``linger_s``. A gateway whose clients only wait for answers receives no event at all: every
event of every job costs the receiving process parsing, and a job has half a dozen.

A second subscription, always on, follows the writes of the ``jobs`` bucket for the listeners
that wait for a job's end (``ends=True``, a ``Prefer: wait``): the orchestrator writes a job's
final record and only then publishes the event that says so, so a waiting answer learns of the
end from the record as stored, one round trip (the event's publish) sooner, and needs no event.
The record stands in as a terminal event (stream sequence 0: it is not in ``JOBS``) carrying
itself; while the feed is on, the event follows as usual.
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

from comfyline.contracts import TERMINAL_EVENTS, JobEvent, JobRecord
from comfyline.runtime import Bus, retrieve

from .joblog import parse_subject
from .mailbox import Mailbox

log = logging.getLogger(__name__)
_TERMINAL_KINDS = frozenset(kind.value for kind in TERMINAL_EVENTS)
#: How a stored record that ends its job says so (compact JSON, as records are written): a
#: waited-for job's other writes are not parsed. (Text in its input may read the same: that
#: record is parsed and looked at as any other.)
_ENDINGS = tuple(f'"last_event":"{kind}"'.encode() for kind in sorted(_TERMINAL_KINDS))


@dataclass(eq=False)
class Listener:
    """One subscriber's queue of live events."""

    job_id: str | None
    owner: str | None
    queue: Mailbox[tuple[int, JobEvent]] = field(default_factory=lambda: Mailbox(1000))
    overflowed: bool = False
    #: Told of the job's end only: its final record as soon as it is stored, and its terminal
    #: event (a ``Prefer: wait``); no other event is parsed or queued for it.
    ends: bool = False

    def offer(self, item: tuple[int, JobEvent]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


class Fanout:
    """Delivers each live ``JOBS`` event to the listeners of its job and of its owner."""

    def __init__(self, bus: Bus, linger_s: float = 30.0) -> None:
        self.bus = bus
        self.linger_s = linger_s
        self._by_job: dict[str, set[Listener]] = defaultdict(set)
        self._by_owner: dict[str, set[Listener]] = defaultdict(set)
        self._ends: dict[str, set[Listener]] = defaultdict(set)
        self._sub: object | None = None
        self._subscribing: asyncio.Future[None] | None = None
        self._followers = 0  # listeners of every event of their job or owner
        self._drop: asyncio.TimerHandle | None = None
        self._records: object | None = None
        self._stopped = False
        self._records_prefix = ""

    @property
    def live_feed(self) -> bool:
        """Whether this gateway receives the events now (for status and tests)."""
        return self._sub is not None

    async def start(self) -> None:
        """Follow the ``jobs`` bucket's writes; the feed of events waits for its first
        follower (:meth:`live`)."""
        bucket = self.bus.names.bucket("jobs")
        self._records_prefix = f"$KV.{bucket}."
        self._records = await self.bus.js.subscribe(
            f"{self._records_prefix}>",
            stream=f"KV_{bucket}",
            cb=self._on_record,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            inactive_threshold=60,
        )

    async def stop(self) -> None:
        """Unsubscribe (the feed too when it is being subscribed now); listeners simply stop
        receiving."""
        self._stopped = True
        if self._subscribing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._subscribing)
        self._keep_feed()  # (after: a subscription ending with no follower schedules a drop)
        for sub in (self._sub, self._records):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()  # type: ignore[attr-defined]
        self._sub = self._records = None

    async def live(self) -> None:
        """Have the feed of events subscribed (new events from now on, an ordered consumer:
        gaps are healed by the client). A follower awaits this after registering and before
        replaying, so every event reaches it from the replay or from the feed."""
        if self._sub is not None or self._stopped:
            return
        if self._subscribing is None or self._subscribing.done():
            self._subscribing = asyncio.ensure_future(self._subscribe())
        await asyncio.shield(self._subscribing)

    async def _subscribe(self) -> None:
        sub = await self.bus.js.subscribe(
            self.bus.names.all_job_events(),
            stream=self.bus.names.stream("JOBS"),
            cb=self._on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            inactive_threshold=60,
        )
        self._sub = sub
        if not self._followers:  # every follower left while this subscribed
            self._drop_later()

    def _keep_feed(self) -> None:
        """Call off the feed's drop, if one is due."""
        if self._drop is not None:
            self._drop.cancel()
            self._drop = None

    def _drop_later(self) -> None:
        self._keep_feed()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a listener closed outside the loop (at exit): the feed stays on
            return
        self._drop = loop.call_later(self.linger_s, self._drop_now)

    def _drop_now(self) -> None:
        self._drop = None
        if self._followers or self._sub is None:
            return
        sub, self._sub = self._sub, None
        task = asyncio.ensure_future(sub.unsubscribe())  # type: ignore[attr-defined]
        task.add_done_callback(retrieve)  # failed: the connection is gone with it

    async def _on_message(self, msg: Msg) -> None:
        try:
            owner, job_id, kind = parse_subject(msg.subject)
        except ValueError:
            log.warning(
                "ignoring a message that is not a job event", extra={"subject": msg.subject}
            )
            return
        listeners = (*self._by_job.get(job_id, ()), *self._by_owner.get(owner, ()))
        if kind not in _TERMINAL_KINDS:
            listeners = tuple(listener for listener in listeners if not listener.ends)
        if not listeners:
            return  # most events have no listener here: they are not even parsed
        try:
            seq = int(msg.metadata.sequence.stream)
            event = JobEvent.from_bytes(msg.data)
        except (ValueError, AttributeError):
            log.warning("ignoring a malformed job event", extra={"subject": msg.subject})
            return
        for listener in listeners:
            listener.offer((seq, event))

    async def _on_record(self, msg: Msg) -> None:
        waiting = self._ends.get(msg.subject[len(self._records_prefix) :])
        if not waiting or (msg.headers and "KV-Operation" in msg.headers):
            return  # most writes have no waiter here: they are not even parsed
        if not any(ending in msg.data for ending in _ENDINGS):
            return  # nor are the waited-for job's writes before its end
        try:
            record = JobRecord.from_bytes(msg.data)
        except ValueError:
            return
        if not record.status.terminal or record.last_event not in TERMINAL_EVENTS:
            return
        end = JobEvent(
            job_id=record.id,
            owner=record.owner,
            model=record.model,
            kind=record.last_event,
            status=record.status,
            occurred_at=record.updated_at,
            record=record,
        )
        for listener in tuple(waiting):
            listener.offer((0, end))

    @contextlib.contextmanager
    def listen(
        self, job_id: str | None = None, owner: str | None = None, ends: bool = False
    ) -> Iterator[Listener]:
        """Receive the live events of one job, or of every job of one owner, while inside
        (await :meth:`live` before relying on them); with ``ends``, only the job's end: its
        final record once stored (see the module), and its terminal event while the feed is
        on."""
        listener = Listener(job_id=job_id, owner=owner, ends=ends and job_id is not None)
        if job_id:
            self._by_job[job_id].add(listener)
            if listener.ends:
                self._ends[job_id].add(listener)
        if owner:
            self._by_owner[owner].add(listener)
        if not listener.ends:
            self._followers += 1
            self._keep_feed()
        try:
            yield listener
        finally:
            if job_id:
                self._discard(self._by_job, job_id, listener)
                if listener.ends:
                    self._discard(self._ends, job_id, listener)
            if owner:
                self._discard(self._by_owner, owner, listener)
            if not listener.ends:
                self._followers -= 1
                if not self._followers and self._sub is not None:
                    self._drop_later()

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
