"""What the orchestrator declares at start, idempotently: streams, buckets, consumers, catalogue.

Every orchestrator process runs this; creating what exists already changes nothing, so any number
can start at once. The durable consumers are shared: processes that bind the same durable split
its messages between them, which is how orchestrators share the work.
"""

from __future__ import annotations

import logging

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from comfyline.catalogue import Catalogue
from comfyline.contracts import ModelTemplate, Names, bucket_spec, stream_spec
from comfyline.contracts.subjects import BucketName, StreamName
from comfyline.runtime import Bus, durable_config, ensure_consumer

from .settings import Settings
from .usage import TERMINAL_KINDS

log = logging.getLogger(__name__)

STREAMS: tuple[StreamName, ...] = ("JOBS", "RUNS", "WORK", "TIMERS", "DEADLETTER")
BUCKETS: tuple[BucketName, ...] = ("jobs", "workers", "models", "usage", "keys")
SUBMISSIONS = "orchestrator-submissions"
RUNS = "orchestrator-runs"
TIMERS = "orchestrator-timers"
USAGE = "orchestrator-usage"
PIPELINES = "orchestrator-pipelines"


def _version(raw: bytes | None) -> int:
    try:
        return ModelTemplate.from_bytes(raw or b"").version
    except ValueError:
        return 0


def _jobs_consumer(
    names: Names, durable: str, filters: list[str], ack_wait: float, max_ack_pending: int
) -> ConsumerConfig:
    """A durable consumer of the ``JOBS`` subjects matching ``filters``."""
    return ConsumerConfig(
        durable_name=names.consumer(durable),
        filter_subjects=filters,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
    )


def consumer_configs(names: Names, settings: Settings) -> dict[StreamName, list[ConsumerConfig]]:
    """The orchestrator's durable consumers, by stream."""
    ack_wait = settings.ack_wait_s
    # usage: strictly in stream order (see usage.py)
    kinds = [names.job_kind_filter(k.value) for k in TERMINAL_KINDS]
    usage = _jobs_consumer(names, USAGE, kinds, ack_wait, 1)
    # pipelines: only the steps' events (told to their pipeline on their own subjects)
    pending = settings.submissions_max_pending
    steps = _jobs_consumer(names, PIPELINES, [names.all_step_events()], ack_wait, pending)
    return {
        "JOBS": [
            steps,
            durable_config(
                names.consumer(SUBMISSIONS),
                names.submissions_filter(),
                ack_wait_s=ack_wait,
                max_ack_pending=settings.submissions_max_pending,
            ),
            usage,
        ],
        "RUNS": [durable_config(names.consumer(RUNS), names.all_run_events(), ack_wait_s=ack_wait)],
        "TIMERS": [
            durable_config(
                names.consumer(TIMERS),
                names.all_timers(),
                ack_wait_s=ack_wait,
                max_ack_pending=settings.timers_max_pending,
            )
        ],
    }


async def declare(bus: Bus, settings: Settings) -> None:
    """Create or update the streams, buckets and durable consumers the orchestrator uses."""
    names = bus.names
    keep = settings.retention
    await bus.ensure_streams(stream_spec(names, s, keep) for s in STREAMS)
    await bus.ensure_buckets(bucket_spec(names, b, keep) for b in BUCKETS)
    for stream, configs in consumer_configs(names, settings).items():
        for config in configs:
            await ensure_consumer(bus, names.stream(stream), config)


async def publish_catalogue(bus: Bus, catalogue: Catalogue) -> int:
    """Write each model's latest template to the ``models`` bucket under its name, if changed.

    Returns how many entries were written. Compare-and-set, so two orchestrators starting at once
    write a changed template once, and an unchanged one not at all.
    """
    kv = await bus.kv(bus.names.bucket("models"))
    written = 0
    for template in catalogue:
        value = template.to_bytes()
        for _ in range(5):
            try:
                entry = await kv.get(template.name)
            except KeyNotFoundError:
                revision = 0
            else:
                if entry.value == value or _version(entry.value) > template.version:
                    break  # unchanged, or a newer version was published by a newer deployment
                revision = entry.revision or 0
            try:
                if revision:
                    await kv.update(template.name, value, last=revision)
                else:
                    await kv.create(template.name, value)
            except KeyWrongLastSequenceError:
                continue
            written += 1
            break
    log.info("catalogue published", extra={"models": len(catalogue), "written": written})
    return written
