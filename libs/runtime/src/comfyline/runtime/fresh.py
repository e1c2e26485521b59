"""Fresh outputs: a job's small outputs kept in JetStream while they are new, copied to S3 beside.

A web app shows a job's result the moment the job ends. Storing it in S3 first puts a PUT on
the path of every job (a few milliseconds on a local store, tens on a hosted one), and the
client's first download goes to S3 as well. Instead a worker publishes an output of up to
``max_bytes`` to the ``OUTPUTS`` stream (file storage, one message per output, kept for
``window_s``) before it reports the job completed: the bytes are as durable as the job record
when the job says it succeeded. A durable pull consumer shared by every worker
(:class:`Archiver`) copies each one to S3 under its key within moments, and acks it only then, so
a worker that stops mid-copy leaves it to another. The gateway serves an output's link from the
stream while the output is fresh, and from S3 after.

A copy is background work: it waits for its worker's next moment that slows no waiting client
(see comfyline.runtime.moments), counted from when the output was kept.

The stream refuses what it has no room for (``total_bytes``, discard new): the worker then
stores that output in S3 on the job's path, as for an output too big to keep here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from nats.errors import Error as NatsError
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, Field

from comfyline.contracts import StreamSpec, utcnow

from .bus import Bus
from .consume import (
    Delivery,
    Reject,
    Retry,
    backoff_delay,
    durable_config,
    ensure_consumer,
    run_consumer,
)
from .moments import Moments
from .storage import ObjectStore, StorageError
from .tracing import inject_headers, span, tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

_KEY = "Comfyline-Key"
_TYPE = "Content-Type"
_META = "Comfyline-Meta-"
_GONE = "Comfyline-Gone"
#: Room kept under the server's largest message for the headers.
_HEADROOM = 4096
ARCHIVE_CONSUMER = "archive"


class FreshSettings(BaseModel):
    """How small outputs are kept in JetStream while fresh (``*_FRESH__*``)."""

    max_bytes: int = Field(
        default=1024 * 1024,
        ge=0,
        description="the largest output kept (0: none, every output goes to S3 on the job's "
        "path); capped by the NATS server's largest message",
    )
    window_s: float = Field(
        default=300, gt=0, description="how long an output stays in the stream (its max age)"
    )
    total_bytes: int = Field(
        default=1024**3,
        ge=1024 * 1024,
        description="the stream's size; beyond it outputs go to S3 on the job's path",
    )


@dataclass(frozen=True, slots=True)
class FreshObject:
    """One output read back from the stream."""

    key: str
    data: bytes
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)
    gone: bool = False  # the mark of an output forgotten, not an output


class FreshOutputs:
    """The ``OUTPUTS`` stream: put, get and forget an output by its object key."""

    def __init__(self, bus: Bus, settings: FreshSettings | None = None) -> None:
        self.bus = bus
        self.settings = settings or FreshSettings()
        self.stream = bus.names.stream("OUTPUTS")

    @property
    def max_bytes(self) -> int:
        """The largest output kept here (the setting, under the server's largest message)."""
        room = int(self.bus.nc.max_payload) - _HEADROOM
        return max(0, min(self.settings.max_bytes, room))

    async def ensure(self) -> None:
        """Create the stream, or update it to the settings (the workers, its writers, do)."""
        window = self.settings.window_s
        spec = StreamSpec(
            self.stream,
            (self.bus.names.all_fresh_outputs(),),
            max_age_s=window,
            duplicate_window_s=min(120.0, window),
            max_bytes=self.settings.total_bytes,
            max_msgs_per_subject=1,
            discard_new=True,
            allow_direct=True,
        )
        await self.bus.ensure_streams([spec])

    async def put(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> datetime | None:
        """Keep ``data`` under ``key``: until when it is kept, or None when the stream refused
        it (too big, no room, no stream): the caller stores it in S3 itself."""
        if len(data) > self.max_bytes:
            return None
        headers = {_KEY: key, _TYPE: content_type}
        headers |= {_META + name: value for name, value in (metadata or {}).items()}
        with span(_tracer, "publish outputs", kind=SpanKind.PRODUCER, attributes={"s3.key": key}):
            inject_headers(headers)  # the archiver's copy to S3 joins the job's trace
            try:
                await self.bus.js.publish(self.bus.names.fresh_output(key), data, headers=headers)
            except (TimeoutError, NatsError) as exc:  # refused, no stream, no answer
                log.warning("output not kept fresh", extra={"key": key, "error": str(exc)})
                return None
        return utcnow() + timedelta(seconds=self.settings.window_s)

    async def get(self, key: str) -> FreshObject | None:
        """The output under ``key``, or None when it is not (or no longer) here."""
        found = await self.latest(key)
        return None if found is None or found[1].gone else found[1]

    async def latest(self, key: str) -> tuple[int, FreshObject] | None:
        """The last message under ``key`` (an output, or the mark that it was forgotten) and
        its stream sequence; None when there is none (never kept, or past the window)."""
        try:
            msg = await self.bus.js.get_msg(
                self.stream, subject=self.bus.names.fresh_output(key), direct=True
            )
        except (TimeoutError, NatsError):  # not here, no stream (yet), no answer
            return None
        found = _object(msg.headers, msg.data)
        return None if found is None else (int(msg.seq or 0), found)

    async def forget(self, key: str) -> None:
        """Forget the output under ``key`` (its run did not succeed): a mark replaces it, and
        the archiver deletes the key from S3 when it sees the mark (a copy that landed before
        it included). Missing is fine."""
        subject = self.bus.names.fresh_output(key)
        try:
            await self.bus.js.publish(subject, b"", headers={_KEY: key, _GONE: "1"})
        except (TimeoutError, NatsError):  # no room for the mark: removed all the same
            with contextlib.suppress(NatsError):
                await self.bus.js.purge_stream(self.stream, subject=subject)


def _object(headers: dict[str, str] | None, data: bytes | None) -> FreshObject | None:
    headers = headers or {}
    key = headers.get(_KEY)
    if key is None:
        return None
    metadata = {
        name.removeprefix(_META).lower(): value
        for name, value in headers.items()
        if name.startswith(_META)
    }
    return FreshObject(
        key,
        data or b"",
        headers.get(_TYPE, "application/octet-stream"),
        metadata,
        gone=_GONE in headers,
    )


class Archiver:
    """Copies every fresh output to S3 under its key, then acks it; run by every worker, one
    consumer shared by all. A copy that fails is tried again with a growing delay; ``stalled``
    says the copies have been failing for longer than ``stall_s`` (S3 down), and the workers
    then store outputs in S3 on the job's path, so a job fails visibly instead of leaving its
    output to a stream that forgets it after ``window_s``."""

    def __init__(
        self,
        fresh: FreshOutputs,
        store: ObjectStore,
        stall_s: float = 30,
        batch: int = 16,
        moments: Moments | None = None,
    ) -> None:
        self.fresh = fresh
        self.store = store
        self.stall_s = stall_s
        self.batch = batch
        #: When a copy may go (its worker's; by default one that never sees a run: each copy
        #: then waits its ``defer_s``).
        self.moments = moments or Moments()
        self.copied = 0
        self._failing_since: float | None = None

    @property
    def stalled(self) -> bool:
        since = self._failing_since
        return since is not None and time.monotonic() - since > self.stall_s

    async def ensure(self) -> None:
        """Create the stream and its consumer, or update them to the settings."""
        await self.fresh.ensure()
        config = durable_config(
            ARCHIVE_CONSUMER,
            self.fresh.bus.names.all_fresh_outputs(),
            ack_wait_s=60,
            max_ack_pending=256,
        )
        await ensure_consumer(self.fresh.bus, self.fresh.stream, config)

    async def run(self) -> None:
        """Copy until cancelled (after :meth:`ensure`), through the runtime's consumer loop:
        up to ``batch`` copies at once, those of one key one after another in stream order."""
        await run_consumer(
            self.fresh.bus,
            self.fresh.stream,
            ARCHIVE_CONSUMER,
            self._copy,
            asyncio.Event(),  # never set: the worker cancels the archiver once it caught up
            concurrency=self.batch,
            key=lambda msg: msg.subject,
        )

    async def caught_up(self, within_s: float) -> bool:
        """Wait (up to ``within_s``) until no output waits to be copied (by any archiver)."""
        bus = self.fresh.bus
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while True:
                    try:
                        info = await bus.js.consumer_info(self.fresh.stream, ARCHIVE_CONSUMER)
                    except (TimeoutError, NatsError):
                        return False
                    if info.num_pending == 0 and info.num_ack_pending == 0:
                        return True
                    await asyncio.sleep(0.05)
        return False

    async def _copy(self, delivery: Delivery) -> None:
        found = _object(delivery.headers, delivery.data)
        if found is None:
            raise Reject("not a fresh output (no key)")
        if delivery.num_delivered == 1:  # (a redelivered one is late already)
            await self.moments.wait(since=delivery.published_at)
        attributes = {"s3.key": found.key}
        try:
            with span(_tracer, "archive output", kind=SpanKind.CONSUMER, attributes=attributes):
                await self._settle(found, delivery.stream_seq)
        except StorageError as exc:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            log.warning("fresh output not copied to S3", extra=attributes | {"error": str(exc)})
            delay = backoff_delay(delivery.num_delivered, cap=30.0)
            raise Retry(f"not copied to S3: {exc.message}", delay=delay) from exc
        self._failing_since = None
        self.copied += 1

    async def _settle(self, found: FreshObject, seq: int) -> None:
        """Make S3 hold what the stream last says under the key: a copy of the output, or, once
        it was forgotten, nothing. Archivers run side by side, and a key is written again by a
        retried job's next attempt: whatever this one copied, it checks the stream's last word
        after and copies that too, so the last write to a key is always of its last message."""
        while True:
            if found.gone:
                await self.store.delete(found.key)
            else:
                await self.store.put_bytes(
                    found.key, found.data, found.content_type, found.metadata
                )
            latest = await self.fresh.latest(found.key)
            if latest is None or latest[0] == seq:  # still the last word (or past the window)
                return
            seq, found = latest
