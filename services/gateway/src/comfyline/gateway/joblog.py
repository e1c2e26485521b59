"""Reading jobs: the ``jobs`` KV record, the ``JOBS`` log, and short replays of it.

The orchestrator is the only writer of job state. A job is read from its ``JobRecord`` when the
orchestrator has written one; before that (a few milliseconds after submission) its ``queued``
view is rebuilt from the ``submitted`` event the gateway itself published.

Listing an owner's jobs asks the stream for the subjects matching ``jobs.<owner>.*.submitted``
(``STREAM.INFO`` with a subject filter): JetStream answers from its per-subject index without
reading any message, and since job ids are time-ordered (ULIDs) the sorted subjects are the
owner's jobs in creation order and a cursor is simply a job id. Only the page's own records are
then read from KV. Counting an owner's active jobs reads, with one short-lived consumer, only the
``submitted`` and terminal events of the last few hours (``filter_subjects``, headers only).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from comfyline.contracts import (
    EVENT_NAMES,
    TERMINAL_EVENTS,
    JobEvent,
    JobRecord,
    JobState,
)
from comfyline.runtime import Bus

from .kv import get_model, nats_errors

REPLAY_BATCH = 256


def parse_subject(subject: str) -> tuple[str, str, str]:
    """``(owner, job_id, kind)`` of a ``jobs.<owner>.<job_id>.<kind>`` subject."""
    owner, job_id, kind = subject.rsplit(".", 3)[-3:]
    return owner, job_id, kind


class JobLog:
    """Reads job records and events; never writes them."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.names = bus.names
        self.stream = bus.names.stream("JOBS")

    async def record(self, job_id: str) -> JobRecord | None:
        """The orchestrator's record of a job, if written yet."""
        kv = await self.bus.kv(self.names.bucket("jobs"))
        found = await get_model(kv, job_id, JobRecord)
        return found[0] if found else None

    async def submitted(self, job_id: str, owner: str | None = None) -> JobEvent | None:
        """The ``submitted`` event of a job (any owner's when ``owner`` is None)."""
        subject = self.names.job_kind_filter("submitted", owner, job_id)
        try:
            async with nats_errors("reading a submission"):
                msg = await self.bus.js.get_last_msg(self.stream, subject)
        except NotFoundError:
            return None
        return JobEvent.from_bytes(msg.data or b"{}")

    async def find(self, job_id: str) -> JobRecord | None:
        """A job as it is now: its record, else its queued view from the submission."""
        record = await self.record(job_id)
        if record is not None:
            return record
        event = await self.submitted(job_id)
        return JobRecord.from_submitted(event) if event and event.submission else None

    async def job_ids(self, owner: str, kind: str = "submitted") -> list[str]:
        """Every job id of ``owner`` with an event of ``kind`` still in the log, newest first
        (answered from the server's per-subject index: no message is read)."""
        async with nats_errors("listing jobs"):
            info = await self.bus.js.stream_info(
                self.stream, subjects_filter=self.names.job_kind_filter(kind, owner)
            )
        subjects = info.state.subjects or {}
        return sorted((parse_subject(s)[1] for s in subjects), reverse=True)

    async def ids_in_state(self, owner: str, status: JobState) -> list[str]:
        """The ids of ``owner``'s jobs that may be in ``status``, newest first: for an ending, the
        jobs with that terminal event; for a live state, the jobs with no terminal event yet."""
        endings = {EVENT_NAMES[kind].state: kind for kind in TERMINAL_EVENTS}
        if status in endings:
            return await self.job_ids(owner, EVENT_NAMES[endings[status]].subject)
        ended: set[str] = set()
        for kind in TERMINAL_EVENTS:
            ended.update(await self.job_ids(owner, EVENT_NAMES[kind].subject))
        return [i for i in await self.job_ids(owner) if i not in ended]

    async def replay(
        self, subject_filter: str, after: int
    ) -> AsyncGenerator[tuple[int, JobEvent], None]:
        """Events on ``subject_filter`` with a stream sequence above ``after``, in order."""
        config = ConsumerConfig(filter_subject=subject_filter)
        if after > 0:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = after + 1
        else:
            config.deliver_policy = DeliverPolicy.ALL
        async for _, seq, data in self.read(config):
            try:
                yield seq, JobEvent.from_bytes(data)
            except ValueError:
                continue  # not a job event: skip rather than break the stream

    async def read(
        self, config: ConsumerConfig, stream: str | None = None
    ) -> AsyncIterator[tuple[str, int, bytes]]:
        """Everything a short-lived consumer of ``stream`` (``JOBS`` by default) has pending
        when created, as ``(subject, sequence, data)``; the consumer is deleted after."""
        stream = stream or self.stream
        name = f"gw-{uuid.uuid4().hex[:16]}"
        config.name = name
        config.ack_policy = AckPolicy.NONE
        config.inactive_threshold = 30.0
        config.mem_storage = True
        config.num_replicas = 1
        timeout = self.bus.settings.request_timeout_s
        async with nats_errors("replaying events"):
            await self.bus.js.add_consumer(stream, config=config)
        psub = None
        try:
            async with nats_errors("replaying events"):
                psub = await self.bus.js.pull_subscribe_bind(name, stream=stream)
                pending = (await psub.consumer_info()).num_pending or 0
            while pending > 0:
                async with nats_errors("replaying events"):
                    msgs = await psub.fetch(min(pending, REPLAY_BATCH), timeout=timeout)
                for msg in msgs:
                    yield msg.subject, int(msg.metadata.sequence.stream), msg.data
                    pending = int(msg.metadata.num_pending)
        finally:
            try:
                if psub is not None:
                    await psub.unsubscribe()
                await asyncio.wait_for(self.bus.js.delete_consumer(stream, name), timeout)
            except Exception:
                pass
