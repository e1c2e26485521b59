"""Dead letters for admins: reading ``DEADLETTER`` and retrying a spent job as a new one.

A job's states only move forward, so a retry never revives the dead-lettered job: it submits a
new job with the same request (``retry_of`` names the old one), and the orchestrator, when it
takes the new job in, writes ``replaced_by`` on the old record. A ``retry.<job_id>`` entry in the
``idempotency`` bucket (``kv.create``: the first writer wins) makes two concurrent retries of one
job make one new job.
"""

from __future__ import annotations

from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from comfyline.contracts import (
    DeadLetter,
    ErrorCode,
    EventKind,
    IdempotencyRecord,
    JobEvent,
    JobRecord,
    JobState,
    new_job_id,
    utcnow,
)
from comfyline.runtime import Bus

from .auth import Principal
from .errors import ApiError
from .joblog import JobLog
from .kv import get_model, nats_errors
from .submit import Submitter

#: An admin's retry is counted in the owner's active jobs but never refused by that cap.
UNCAPPED = {"active_jobs": float(10**9)}


class DeadLetterBook:
    """Lists dead letters and retries them."""

    def __init__(self, bus: Bus, jobs: JobLog, submitter: Submitter, claims: KeyValue) -> None:
        self.bus = bus
        self.names = bus.names
        self.jobs = jobs
        self.submitter = submitter
        self.claims = claims
        self.stream = bus.names.stream("DEADLETTER")

    async def letters(
        self, model: str | None = None, job_id: str | None = None
    ) -> list[DeadLetter]:
        """Dead letters (of one model, if given), oldest first; one job's only with ``job_id``."""
        subject = self.names.dead_letter(model) if model else self.names.all_dead_letters()
        config = ConsumerConfig(filter_subject=subject, deliver_policy=DeliverPolicy.ALL)
        found = []
        async for _, _, data in self.jobs.read(config, self.stream):
            try:
                letter = DeadLetter.from_bytes(data)
            except ValueError:
                continue
            if job_id is None or letter.job_id == job_id:
                found.append(letter)
        return found

    async def find(self, job_id: str) -> tuple[DeadLetter, JobRecord]:
        """The dead letter of ``job_id`` and the job's record (404 when it has none)."""
        record = await self.jobs.record(job_id)
        letters = await self.letters(record.model, job_id) if record else []
        if record is None or not letters:
            raise ApiError(
                404, ErrorCode.NOT_FOUND, "no dead letter for that job", details={"id": job_id}
            )
        return letters[-1], record

    async def retry(self, job_id: str, request_id: str | None) -> JobRecord:
        """Submit the dead-lettered job again as a new job; its first record."""
        _, record = await self.find(job_id)
        if record.replaced_by:
            raise self._already(job_id, record.replaced_by)
        new_id = new_job_id()
        claim = IdempotencyRecord(job_id=new_id, body_sha256="", created_at=utcnow())
        key = f"retry.{job_id}"
        try:
            async with nats_errors("claiming the retry"):
                await self.claims.create(key, claim.to_bytes())
        except KeyWrongLastSequenceError:
            earlier = await get_model(self.claims, key, IdempotencyRecord)
            raise self._already(job_id, earlier[0].job_id if earlier else None) from None
        event = JobEvent(
            job_id=new_id,
            owner=record.owner,
            model=record.model,
            kind=EventKind.SUBMITTED,
            status=JobState.QUEUED,
            submission=record.resubmission(request_id),
        )
        owner = Principal(owner_id=record.owner, limits=UNCAPPED)
        try:
            await self.submitter.publish(owner, event)
        except Exception:
            async with nats_errors("releasing the retry claim"):
                await self.claims.delete(key)
            raise
        return JobRecord.from_submitted(event)

    @staticmethod
    def _already(job_id: str, replaced_by: str | None) -> ApiError:
        return ApiError(
            409,
            ErrorCode.ALREADY_RETRIED,
            "that job was retried already",
            details={"id": job_id, "replaced_by": replaced_by},
        )
