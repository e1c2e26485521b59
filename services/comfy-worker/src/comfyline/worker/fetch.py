"""Taking one job off a model's work consumer, only when a server is free to run it.

Every worker binds the same durable consumers per model, one per lane (``work-<model>`` for
interactive jobs, ``work-<model>-batch`` for batch jobs: a work-queue stream refuses overlapping
consumers). A free server asks the consumers of the models it can run for one message each with
``no_wait``, every model's interactive lane before any batch lane, so nothing is ever fetched
that no server can take at once, and a batch job is taken only when no interactive job that
server could run is waiting. When all are empty it waits for the doorbell (a plain subscription
to ``work.>`` that rings on each new job) or the idle poll interval (which finds redeliveries,
which ring no bell). An idle server also holds one pull request open (:meth:`WorkFetcher.hold`)
on the interactive work of the model it ran last, so that model's next job reaches it as it is
stored; the request is taken back once the server is no longer idle (see ``Worker._feed``).

A consumer found empty is not asked again until the doorbell rings for it or a sweep is due (once
per idle poll interval: redeliveries ring no bell; the sweep is one ``STREAM.INFO`` that names the
work subjects holding messages). A fetched message whose ``num_pending`` is 0 empties its consumer
the same way. So a server that finishes a job asks only the consumers that may hold work, not
every model's two lanes: with a dozen models that was some fifty requests per job, on the CPU the
job's own hops need.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from comfyline.contracts import LANES, ModelTemplate, utcnow
from comfyline.runtime import Bus, durable_config, ensure_consumer

log = logging.getLogger(__name__)
_NEXT = json.dumps({"batch": 1, "no_wait": True}).encode()
#: After the doorbell rang, wait this long server-side for the message: the core subscription
#: can hear a publish before the stream makes it visible to the consumer.
RUNG_WAIT_S = 0.25


async def _withdraw(sub: Subscription, came: list[Msg]) -> None:
    """Stop a held pull request (see :meth:`WorkFetcher.hold`): unsubscribe, then wait out what
    the server sent before it heard so (a drain), and give back any job among it."""
    with contextlib.suppress(Exception):
        await sub.drain()  # type: ignore[no-untyped-call]
    for msg in came:
        if not (msg.headers or {}).get("Status"):
            with contextlib.suppress(Exception):
                await msg.nak()


def consumer_backoff(ack_wait_s: float, max_deliver: int) -> list[float] | None:
    """Redelivery delays after an ack timeout (the first is the ack wait itself).

    JetStream wants fewer backoff values than ``max_deliver``; with backoff set, delivery ``n``
    waits ``backoff[n-1]`` for its ack, so each value must outlast the in-progress heartbeat.
    """
    count = max_deliver - 1
    if count < 1:
        return None
    return [ack_wait_s * (2**i) for i in range(min(count, 3))]


class Ring:
    """What one listener heard: set when work is published, and for which models."""

    def __init__(self, models: Sequence[str]) -> None:
        self.models = frozenset(models)
        self.event = asyncio.Event()
        self.rung: list[tuple[str, str]] = []

    async def wait(self) -> None:
        await self.event.wait()


class Doorbell:
    """Wakes the servers waiting for work of a model when a job for it is published."""

    def __init__(self) -> None:
        self._waiters: list[Ring] = []

    def ring(self, model: str, lane: str = "interactive") -> None:
        for ring in self._waiters:
            if model in ring.models:
                if (model, lane) not in ring.rung:
                    ring.rung.append((model, lane))
                ring.event.set()

    @contextlib.contextmanager
    def listen(self, models: Sequence[str]) -> Iterator[Ring]:
        """A :class:`Ring` set when work for one of ``models`` is published while inside."""
        ring = Ring(models)
        self._waiters.append(ring)
        try:
            yield ring
        finally:
            self._waiters.remove(ring)


class WorkFetcher:
    """Binds the work consumers and fetches one message at a time from them."""

    def __init__(
        self,
        bus: Bus,
        ack_wait_s: float,
        request_timeout_s: float = 5.0,
        sweep_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.ack_wait_s = ack_wait_s
        self.request_timeout_s = request_timeout_s
        self.sweep_s = sweep_s
        self.bell = Doorbell()
        self.bound: set[str] = set()
        self._stream = bus.names.stream("WORK")
        self._prefix = bus.api_prefix
        self._turn = itertools.count()
        self._sub: Subscription | None = None
        #: (model, lane) consumers found empty since the last sweep, with no bell since.
        self._empty: set[tuple[str, str]] = set()
        self._rung_at: dict[tuple[str, str], float] = {}
        self._bells: dict[tuple[str, str], int] = {}  # how many times each has rung
        self._swept = time.monotonic()

    async def start(self) -> None:
        """Listen for newly published work (the doorbell)."""

        async def on_work(msg: Msg) -> None:
            key = self.bus.names.work_key(msg.subject)
            self._empty.discard(key)
            self._rung_at[key] = time.monotonic()
            self._bells[key] = self._bells.get(key, 0) + 1
            self.bell.ring(*key)

        self._sub = await self.bus.nc.subscribe(self.bus.names.all_work(), cb=on_work)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def bind(self, template: ModelTemplate) -> None:
        """Create or update the model's durable consumers, one per lane (every worker applies
        the same ones)."""
        if template.name in self.bound:
            return
        max_deliver = template.retry_limit + 1
        for lane in LANES:
            config = durable_config(
                self.bus.names.work_consumer(template.name, lane),
                self.bus.names.work(template.name, lane),
                ack_wait_s=self.ack_wait_s,
                max_deliver=max_deliver,
                backoff_s=consumer_backoff(self.ack_wait_s, max_deliver),
                max_ack_pending=10_000,
            )
            await ensure_consumer(self.bus, self._stream, config)
        self.bound.add(template.name)
        log.info("bound work consumer", extra={"model": template.name})

    async def may_have_work(self, models: Sequence[str], sweep: bool = True) -> list[str]:
        """Those of ``models`` whose consumers are not known to be empty (a sweep first, once
        one is due: redelivered work rings no bell; not while ``sweep`` is False, as when a
        bell just rang: that job is fetched first)."""
        if sweep and time.monotonic() - self._swept >= self.sweep_s:
            await self._sweep()
        return [m for m in models if any((m, lane) not in self._empty for lane in LANES)]

    async def _sweep(self) -> None:
        """Find which consumers may hold work without asking each: one ``STREAM.INFO`` lists the
        work subjects that hold messages (waiting, redelivered after a worker died, or in
        flight); every other lane is empty until its bell rings. Asking every model's two
        lanes instead was some twenty-five requests per sweep with the built-in templates,
        often during a job's run, on the CPU it needed."""
        asked_at = time.monotonic()
        self._swept = asked_at
        held = await self._held()
        self._empty.clear()
        if held is None:
            return  # not known: every consumer is asked
        for model in self.bound:
            for lane in LANES:
                if (model, lane) not in held:
                    # (a bell just before the request may announce a message not yet stored)
                    self._found_empty((model, lane), asked_at - RUNG_WAIT_S)

    def _found_empty(self, key: tuple[str, str], since: float) -> None:
        """Remember ``key`` as empty unless its bell rang at ``since`` or later."""
        if self._rung_at.get(key, -1.0) < since:
            self._empty.add(key)

    async def next_for(
        self,
        models: Sequence[str],
        rung: Sequence[tuple[str, str]] = (),
        rotate: bool = True,
        order: Callable[[list[str]], Awaitable[list[str]]] | None = None,
    ) -> Msg | None:
        """One message, interactive lane first: in each lane, from the first of ``models`` that
        has one (in rotating order, unless ``rotate`` is False: then in the order given, or in
        the one ``order`` gives).

        Within a lane, models in ``rung`` (the doorbell heard work for them) are asked first,
        each waiting up to :data:`RUNG_WAIT_S` for its message to become visible. ``order`` is
        asked only when that found nothing: a job just announced does not wait for it.
        """
        ready = [m for m in models if m in self.bound]
        if not ready:
            return None
        start = next(self._turn) % len(ready) if rotate else 0
        for lane in LANES:
            for model, rung_lane in rung:
                if rung_lane == lane and model in ready:
                    msg = await self._next(model, lane, wait_s=RUNG_WAIT_S)
                    if msg is not None:
                        return msg
            if order is not None:
                ready, order, start = await order(ready), None, 0
            for model in ready[start:] + ready[:start]:
                if (model, lane) in self._empty:
                    continue
                msg = await self._next(model, lane)
                if msg is not None:
                    return msg
        return None

    async def hold(
        self, model: str, wait_s: float, take: Callable[[Msg], bool] | None = None
    ) -> Msg | None:
        """One message of ``model``'s interactive lane, the pull request held open up to
        ``wait_s`` server-side: an idle server's request, so that the next job of the model it
        ran last is delivered to it as it is stored (no bell to hear first, no request after).

        ``take`` is offered the job the moment it arrives, in the subscription's own callback:
        True when it took it (the job starts there and then; the request returns None once it
        has closed), False to have it returned as usual. Handing it on through the request's
        own ending cost a few turns of the event loop in front of every job it brings.

        Cancelled, the request is taken back: its reply subject loses its interest, and the
        server hands a pull request without one nothing more (and drops it); a job it sent
        before hearing so arrives while the subscription drains and goes back at once.

        A job it brings that left none behind (``num_pending`` 0) empties the consumer when at
        most one bell rang meanwhile: that job's own (a request held open had found nothing
        waiting, so what it brings was published after it). Its server's next look for work
        then asks nothing of that consumer until another bell rings.
        """
        key = (model, "interactive")
        bells = self._bells.get(key, 0)
        nc = self.bus.nc
        came: list[Msg] = []
        taken: list[Msg] = []
        answered = asyncio.Event()

        async def on_reply(msg: Msg) -> None:
            job = not answered.is_set() and not (msg.headers or {}).get("Status")
            try:  # (first: the job's task runs before what the answer wakes)
                took = job and take is not None and take(msg)
            except Exception:  # returned as usual instead (a bug must not lose the job)
                log.exception("starting a held job failed", extra={"model": model})
                took = False
            if took:
                taken.append(msg)  # (never given back by a withdrawal: it runs)
            else:
                came.append(msg)
            answered.set()

        sub = await nc.subscribe(nc.new_inbox(), cb=on_reply)
        durable = self.bus.names.work_consumer(model, "interactive")
        body = json.dumps({"batch": 1, "expires": int(wait_s * 1e9)}).encode()
        asked_at = time.monotonic()
        try:
            await nc.publish(
                f"{self._prefix}.CONSUMER.MSG.NEXT.{self._stream}.{durable}",
                body,
                reply=sub.subject,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), wait_s + self.request_timeout_s)
        except asyncio.CancelledError:
            await asyncio.shield(_withdraw(sub, came))
            raise
        except nats.errors.Error:
            pass
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
        msg = taken[0] if taken else came[0] if came else None
        if msg is None or (msg.headers or {}).get("Status"):
            self._found_empty(key, asked_at - RUNG_WAIT_S)  # expired (or refused): none came
            return None
        if self._bells.get(key, 0) - bells <= 1:
            with contextlib.suppress(ValueError, AttributeError):
                if msg.metadata.num_pending == 0:
                    self._empty.add(key)
        return None if taken else msg

    async def waiting_models(self) -> set[str]:
        """The models with interactive work in the stream."""
        return {model for model, lane in await self._held() or () if lane == "interactive"}

    async def _held(self) -> set[tuple[str, str]] | None:
        """The ``(model, lane)`` of every work subject holding messages, from one
        ``STREAM.INFO`` (None when it could not be read)."""
        try:
            info = await self.bus.js.stream_info(
                self._stream, subjects_filter=self.bus.names.all_work()
            )
        except (TimeoutError, nats.errors.Error):
            return None
        return {self.bus.names.work_key(s) for s in (info.state.subjects or {})}

    async def waited(self, model: str, lane: str = "interactive") -> float:
        """Seconds the model's oldest job not yet delivered has waited in ``lane`` (0: none).

        Two small requests: the consumer's last delivered stream sequence, then the first
        message on the lane's subject after it (redeliveries are not counted).
        """
        durable = self.bus.names.work_consumer(model, lane)
        try:
            info = await self.bus.js.consumer_info(self._stream, durable)
            if not info.num_pending:
                return 0.0
            after = (info.delivered.stream_seq or 0) + 1
            head = await self.bus.js.get_msg(
                self._stream, seq=after, subject=self.bus.names.work(model, lane), next=True
            )
        except (TimeoutError, nats.errors.Error):
            return 0.0
        if head.time is None:
            return 0.0
        return max(0.0, (utcnow() - head.time).total_seconds())

    async def _next(self, model: str, lane: str, wait_s: float = 0.0) -> Msg | None:
        durable = self.bus.names.work_consumer(model, lane)
        subject = f"{self._prefix}.CONSUMER.MSG.NEXT.{self._stream}.{durable}"
        body = json.dumps({"batch": 1, "expires": int(wait_s * 1e9)}).encode() if wait_s else _NEXT
        asked_at = time.monotonic()
        try:
            # A private inbox per fetch (old style): tried on the connection's shared reply
            # subscription instead, the fetched messages never reached their handler and every
            # job ended max_attempts_exceeded.
            msg = await self.bus.nc.request(
                subject, body, timeout=self.request_timeout_s + wait_s, old_style=True
            )
        except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError):
            return None
        status = (msg.headers or {}).get("Status")
        if status:
            if status in {"404", "408"}:
                # A bell just before the request may announce a message not yet visible to it.
                self._found_empty((model, lane), asked_at - RUNG_WAIT_S)
            else:
                log.warning("work fetch refused", extra={"model": model, "status": status})
            return None
        with contextlib.suppress(ValueError, AttributeError):
            if msg.metadata.num_pending == 0:
                self._found_empty((model, lane), asked_at)
        return msg
