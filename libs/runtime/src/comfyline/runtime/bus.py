"""The NATS connection every service shares: connect, declare, publish, request, KV.

One :class:`Bus` per process. Every publish sets ``Content-Type``, ``traceparent`` and, for
JetStream, ``Nats-Msg-Id`` (so a retried publish is deduplicated by the server).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TypeVar

import nats
from nats.aio.client import Client
from nats.errors import NoServersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NoStreamResponseError, ServiceUnavailableError
from nats.js.kv import KeyValue
from opentelemetry.trace import SpanKind

from comfyline.contracts import (
    CONTENT_TYPE,
    JSON,
    MESSAGE_TYPE,
    MSG_ID,
    BucketSpec,
    ComfylineError,
    ErrorCode,
    Names,
    StreamSpec,
    WireModel,
)

from .settings import NatsSettings
from .tracing import inject_headers, span, tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)
R = TypeVar("R", bound=WireModel)

_RETENTION = {
    "limits": RetentionPolicy.LIMITS,
    "workqueue": RetentionPolicy.WORK_QUEUE,
    "interest": RetentionPolicy.INTEREST,
}


class BusError(ComfylineError):
    """NATS could not be reached, or did not answer in time."""

    code = ErrorCode.SERVICE_UNAVAILABLE


def message_headers(message: WireModel, msg_id: str | None = None) -> dict[str, str]:
    """The headers every Comfyline message carries."""
    headers = {CONTENT_TYPE: JSON, MESSAGE_TYPE: type(message).__name__}
    if msg_id:
        headers[MSG_ID] = msg_id
    return inject_headers(headers)


class Bus:
    """A connected NATS client with JetStream, in one namespace."""

    def __init__(self, nc: Client, names: Names, settings: NatsSettings) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=settings.request_timeout_s)
        self.names = names
        self.settings = settings
        self._kv: dict[str, KeyValue] = {}

    @classmethod
    async def connect(cls, settings: NatsSettings, names: Names, client_name: str) -> Bus:
        """Connect with bounded retry (a service may start before NATS is ready)."""
        delay = 0.1
        for attempt in range(1, settings.connect_attempts + 1):
            try:
                nc = await nats.connect(
                    servers=[url.strip() for url in settings.url.split(",") if url.strip()],
                    name=client_name,
                    connect_timeout=settings.connect_timeout_s,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                )
                return cls(nc, names, settings)
            except (TimeoutError, NoServersError, OSError, NatsTimeout) as exc:
                if attempt == settings.connect_attempts:
                    raise BusError(f"cannot reach NATS at {settings.url}: {exc}") from exc
                log.warning("NATS not ready, retrying", extra={"attempt": attempt})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise BusError("unreachable")  # pragma: no cover

    @property
    def api_prefix(self) -> str:
        """The JetStream API subject prefix (``$JS.API`` unless a domain or prefix is set)."""
        return str(getattr(self.js, "_prefix", "$JS.API"))

    async def close(self) -> None:
        """Drain subscriptions and close (finishes in-flight handlers first)."""
        if not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), timeout=10)
            except (TimeoutError, NatsTimeout):
                await self.nc.close()

    # --- declarations ------------------------------------------------------------------------
    async def ensure_streams(self, specs: Iterable[StreamSpec]) -> None:
        """Create each stream, or update it to the spec, idempotently."""
        for spec in specs:
            config = StreamConfig(
                name=spec.name,
                subjects=list(spec.subjects),
                retention=_RETENTION[spec.retention],
                max_age=spec.max_age_s or None,
                duplicate_window=spec.duplicate_window_s,
                num_replicas=self.settings.replicas,
                storage=StorageType.FILE,
                allow_msg_ttl=spec.allow_msg_ttl or None,
                max_bytes=spec.max_bytes or None,
                max_msgs_per_subject=spec.max_msgs_per_subject or -1,
                discard=DiscardPolicy.NEW if spec.discard_new else DiscardPolicy.OLD,
                allow_direct=spec.allow_direct or None,
            )
            try:
                await self.js.add_stream(config)
            except BadRequestError:
                await self.js.update_stream(config)

    async def ensure_buckets(self, specs: Iterable[BucketSpec]) -> None:
        """Create each KV bucket if missing and keep a handle to it; a bucket that exists gets
        the replica count of the settings (as streams do), its other settings are kept."""
        for spec in specs:
            config = KeyValueConfig(
                bucket=spec.name,
                history=spec.history,
                ttl=spec.ttl_s or None,
                replicas=self.settings.replicas,
                limit_marker_ttl=1.0 if spec.per_key_ttl else None,
            )
            try:
                self._kv[spec.name] = await self.js.create_key_value(config)
            except BadRequestError:
                kv = self._kv[spec.name] = await self.js.key_value(spec.name)
                info = (await kv.status()).stream_info
                if info.config.num_replicas != self.settings.replicas:
                    info.config.num_replicas = self.settings.replicas
                    await self.js.update_stream(info.config)

    async def kv(self, bucket: str) -> KeyValue:
        """A handle to a KV bucket (declared by :meth:`ensure_buckets` or bound on first use)."""
        if bucket not in self._kv:
            self._kv[bucket] = await self.js.key_value(bucket)
        return self._kv[bucket]

    # --- publishing ----------------------------------------------------------------------------
    async def publish(self, subject: str, message: WireModel, msg_id: str | None = None) -> PubAck:
        """Publish to JetStream and wait for the stream's ack (deduplicated by ``msg_id``).

        While a stream has no leader (a NATS node was lost and the cluster is electing one, a
        few seconds) the server answers "no responders" or 503: nothing was stored, so the
        publish is tried again, for up to ``publish_retry_s``. :class:`BusError` after that, or
        on a timeout (which is not retried here: the message may have been stored).
        """
        with span(
            _tracer,
            f"publish {subject.split('.')[0 if not self.names.namespace else 1]}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": subject,
                "messaging.message.id": msg_id or "",
            },
        ):
            give_up = asyncio.get_running_loop().time() + self.settings.publish_retry_s
            pause = 0.05
            while True:
                try:
                    return await self.js.publish(
                        subject, message.to_bytes(), headers=message_headers(message, msg_id)
                    )
                except (TimeoutError, NatsTimeout) as exc:
                    raise BusError(f"publish to {subject} timed out") from exc
                except (NoStreamResponseError, ServiceUnavailableError) as exc:
                    if asyncio.get_running_loop().time() + pause > give_up:
                        raise BusError(f"no stream takes {subject} now: {exc}") from exc
                    log.warning("no stream answered; publishing again", extra={"subject": subject})
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)

    async def send(self, subject: str, message: WireModel) -> None:
        """Publish on core NATS (no stream, no ack): control messages."""
        await self.nc.publish(subject, message.to_bytes(), headers=message_headers(message))

    async def request(
        self,
        subject: str,
        message: WireModel,
        reply_model: type[R],
        timeout: float | None = None,  # noqa: ASYNC109 - passed to nats, which enforces it
    ) -> R:
        """Request/reply with a timeout; the reply is parsed into ``reply_model``."""
        with span(
            _tracer,
            f"request {subject}",
            kind=SpanKind.CLIENT,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject},
        ):
            try:
                reply = await self.nc.request(
                    subject,
                    message.to_bytes(),
                    timeout=timeout or self.settings.request_timeout_s,
                    headers=message_headers(message),
                )
            except (TimeoutError, NatsTimeout) as exc:
                raise BusError(f"no reply on {subject} in time", code=ErrorCode.TIMEOUT) from exc
            except nats.errors.NoRespondersError as exc:
                raise BusError(f"no service answers {subject}") from exc
            return reply_model.from_bytes(reply.data)
