"""Consuming: typed outcomes, the one place that maps them to acks, heartbeats, request/reply.

A handler returns (-> ``ack``), or raises :class:`Retry` (-> ``nak`` with a delay, the message
comes back) or :class:`Reject` (-> ``term``, never redelivered, after ``on_reject`` has recorded
why). Any other exception is a bug or an unforeseen fault: it is logged and naked with a backoff.
Handlers never ack themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from comfyline.contracts import ComfylineError, ErrorCode, ErrorReply, WireModel

from .bus import Bus
from .tasks import cancel_and_wait
from .tracing import extract_context, span, tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)
M = TypeVar("M", bound=WireModel)


class Retry(ComfylineError):
    """Try this message again after ``delay`` seconds (a transient failure)."""

    code = ErrorCode.SERVICE_UNAVAILABLE

    def __init__(self, message: str, *, delay: float = 1.0, code: ErrorCode | None = None) -> None:
        super().__init__(message, code=code)
        self.delay = delay


class Reject(ComfylineError):
    """Never deliver this message again (a permanent failure with its code)."""


@dataclass(slots=True)
class Delivery:
    """One received JetStream message, with what handlers need to know about it."""

    msg: Msg
    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, msg: Msg) -> Delivery:
        return cls(msg=msg, subject=msg.subject, data=msg.data, headers=dict(msg.headers or {}))

    @property
    def num_delivered(self) -> int:
        """How many times this message has been delivered (1 on the first)."""
        return int(self.msg.metadata.num_delivered or 1)

    @property
    def published_at(self) -> float:
        """When JetStream stored the message, in epoch seconds."""
        return self.msg.metadata.timestamp.timestamp()

    @property
    def stream_seq(self) -> int:
        """The message's sequence in its stream."""
        return int(self.msg.metadata.sequence.stream)

    def parse(self, model: type[M]) -> M:
        """The payload as ``model`` (tolerant parse)."""
        return model.from_bytes(self.data)


Handler = Callable[[Delivery], Awaitable[None]]
RejectHook = Callable[[Delivery, Reject], Awaitable[None]]


def backoff_delay(deliveries: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff: ``base * 2**(deliveries-1)``, capped."""
    return float(min(cap, base * (2 ** max(0, deliveries - 1))))


async def settle(delivery: Delivery, handler: Handler, on_reject: RejectHook | None = None) -> str:
    """Run ``handler`` on one delivery and settle the message by its outcome.

    Returns the outcome: ``"ack"``, ``"nak"`` or ``"term"``.
    """
    parent = extract_context(delivery.headers)
    token = otel_context.attach(parent)
    try:
        with span(
            _tracer,
            f"process {delivery.subject}",
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": delivery.subject,
                "messaging.nats.delivery_count": delivery.num_delivered,
            },
        ) as current:
            try:
                await handler(delivery)
            except Retry as retry:
                current.set_attribute("comfyline.outcome", "nak")
                await delivery.msg.nak(delay=retry.delay)
                return "nak"
            except Reject as reject:
                current.set_attribute("comfyline.outcome", "term")
                if on_reject is not None:
                    try:
                        await on_reject(delivery, reject)
                    except Exception:
                        log.exception("recording a rejected message failed; naking it")
                        await delivery.msg.nak(delay=backoff_delay(delivery.num_delivered))
                        return "nak"
                await delivery.msg.term()
                return "term"
            except asyncio.CancelledError:
                await delivery.msg.nak()
                raise
            except Exception as exc:
                current.record_exception(exc)
                log.exception("handler failed; naking", extra={"subject": delivery.subject})
                await delivery.msg.nak(delay=backoff_delay(delivery.num_delivered))
                return "nak"
            current.set_attribute("comfyline.outcome", "ack")
            await delivery.msg.ack()
            return "ack"
    finally:
        otel_context.detach(token)


async def ensure_consumer(bus: Bus, stream: str, config: ConsumerConfig) -> None:
    """Create the durable consumer, or update it to ``config``."""
    assert config.durable_name
    try:
        await bus.js.consumer_info(stream, config.durable_name)
    except NotFoundError:
        await bus.js.add_consumer(stream, config)
        return
    await bus.js.add_consumer(stream, config)


def durable_config(
    name: str,
    filter_subject: str,
    *,
    ack_wait_s: float = 30,
    max_deliver: int = -1,
    backoff_s: list[float] | None = None,
    max_ack_pending: int = 1000,
) -> ConsumerConfig:
    """A durable pull consumer with explicit ack."""
    return ConsumerConfig(
        durable_name=name,
        filter_subject=filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
        backoff=backoff_s,
        max_ack_pending=max_ack_pending,
    )


KeyOf = Callable[[Msg], str | None]
#: How long a fetch of a known backlog waits for its batch to fill.
BACKLOG_FETCH_S = 0.05


def _pending_after(msg: Msg) -> int:
    """How many messages the consumer still had to deliver after ``msg`` (0 if unknown)."""
    try:
        return int(msg.metadata.num_pending or 0)
    except Exception:  # not a JetStream message (a status message): nothing known
        return 0


async def run_consumer(
    bus: Bus,
    stream: str,
    durable: str,
    handler: Handler,
    stop: asyncio.Event,
    *,
    on_reject: RejectHook | None = None,
    concurrency: int = 16,
    key: KeyOf | None = None,
    max_batch: int = 64,
    fetch_timeout_s: float = 1.0,
    grace_s: float = 10.0,
) -> None:
    """Fetch from a bound durable consumer until ``stop`` is set, settling each message.

    Up to ``concurrency`` messages are in flight, and the next fetch happens as soon as a slot
    frees (one slow message never holds back a batch). Messages with the same ``key`` (say, the
    run events of one job) are handled one after another in stream order. On stop, in-flight
    messages get ``grace_s`` to finish; the rest are cancelled, which naks them, so another
    replica picks them up at once.

    A fetch asks for what is known to be waiting (the last message's ``num_pending``, at most
    ``max_batch``), and for one message while nothing is: a batch fetch returns only once it is
    full or its pull request expires, so asking for more than is there would hold the first
    message back (up to ``fetch_timeout_s``, measured at about 0.75 s for a third of the jobs
    of a lightly loaded stack). A backlog fetch waits at most :data:`BACKLOG_FETCH_S` for a
    batch another replica may have half emptied.
    """
    psub = await bus.js.pull_subscribe_bind(durable=durable, stream=stream)
    running: set[asyncio.Task[None]] = set()
    tails: dict[str, asyncio.Task[None]] = {}
    waiting = 0  # messages the consumer had left to deliver, as of the last one fetched

    async def one(msg: Msg, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])
        await settle(Delivery.of(msg), handler, on_reject)

    def forget(msg_key: str, task: asyncio.Task[None]) -> None:
        if tails.get(msg_key) is task:
            del tails[msg_key]

    try:
        while not stop.is_set():
            if len(running) >= concurrency:
                await asyncio.wait(running, timeout=fetch_timeout_s, return_when="FIRST_COMPLETED")
                continue
            batch = min(max_batch, concurrency - len(running), waiting)
            try:
                if batch > 1:
                    msgs = await psub.fetch(batch, min(fetch_timeout_s, BACKLOG_FETCH_S))
                else:
                    msgs = await psub.fetch(1, fetch_timeout_s)
            except (TimeoutError, NatsTimeout):
                waiting = 0
                continue
            except ConnectionClosedError:
                break
            except Exception:
                if stop.is_set():
                    break
                log.exception("fetch failed; retrying", extra={"consumer": durable})
                await asyncio.sleep(0.5)
                continue
            waiting = _pending_after(msgs[-1]) if msgs else 0
            for msg in msgs:
                msg_key = key(msg) if key else None
                task = asyncio.create_task(one(msg, tails.get(msg_key) if msg_key else None))
                running.add(task)
                task.add_done_callback(running.discard)
                if msg_key:
                    tails[msg_key] = task
                    task.add_done_callback(functools.partial(forget, msg_key))
    finally:
        if running:
            _, pending = await asyncio.wait(set(running), timeout=grace_s)
            await cancel_and_wait(pending, every=grace_s + 1.0)  # let each one report
        with contextlib.suppress(Exception):
            await psub.unsubscribe()


@contextlib.asynccontextmanager
async def heartbeat(msg: Msg, every: float) -> AsyncIterator[None]:
    """Send ``in_progress`` every ``every`` seconds while the body runs (long work)."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        await cancel_and_wait([task])


Responder = Callable[[Delivery], Awaitable[WireModel]]


async def serve(bus: Bus, subject: str, queue: str, responder: Responder) -> Subscription:
    """Answer requests on ``subject`` in queue group ``queue`` (replicas share the load).

    A :class:`ComfylineError` becomes an :class:`ErrorReply` with its code; anything else an
    ``internal_error`` reply. Each request is handled in its own task.
    """

    tasks: set[asyncio.Task[None]] = set()

    async def handle(msg: Msg) -> None:
        delivery = Delivery(
            msg=msg, subject=msg.subject, data=msg.data, headers=dict(msg.headers or {})
        )
        token = otel_context.attach(extract_context(delivery.headers))
        try:
            with span(
                _tracer,
                f"serve {subject}",
                kind=SpanKind.SERVER,
                attributes={"messaging.system": "nats", "messaging.destination.name": subject},
            ):
                reply: WireModel
                try:
                    reply = await responder(delivery)
                except ComfylineError as exc:
                    reply = ErrorReply(error=exc.message, code=exc.code.value)
                except Exception as exc:
                    log.exception("responder failed", extra={"subject": subject})
                    reply = ErrorReply(error=str(exc) or type(exc).__name__, code="internal_error")
                if msg.reply:
                    await msg.respond(reply.to_bytes())
        finally:
            otel_context.detach(token)

    async def on_request(msg: Msg) -> None:
        task = asyncio.create_task(handle(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return await bus.nc.subscribe(subject, queue=queue, cb=on_request)
