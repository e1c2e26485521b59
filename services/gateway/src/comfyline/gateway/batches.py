"""Batches: up to ``max_batch_jobs`` job requests, checked as a whole, each becoming a job.

Every request is validated first (the first error of each is reported, and then nothing is
submitted); the owner's spend quota, each model's queue cap and the owner's active-jobs cap are
checked for the whole batch, the active-job slots taken in one compare-and-set. The batch record
(``batches`` bucket, ``<batch_id>`` -> :class:`BatchRecord`, with every job id chosen up front) is
written before any job is published, and each job carries ``batch_id``; so a batch's progress is
read from its jobs' records, and survives any process restart like the jobs themselves.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from comfyline.contracts import (
    BatchRecord,
    ComfylineError,
    ErrorCode,
    JobRecord,
    Priority,
    new_batch_id,
    new_job_id,
    utcnow,
)
from comfyline.runtime import cas_pause

from .auth import Principal
from .errors import ApiError, not_found
from .fleet import Fleet
from .joblog import JobLog
from .kv import get_model, nats_errors
from .limits import Limits
from .schemas import BatchCreate
from .submit import Prepared, Submitter, lane_of

BATCH_ID = re.compile(r"^bat_[0-9a-z]{26}$")
#: A batch's job with no trace this long after the batch was made was never published.
LOST_AFTER_S = 60.0
_CAS_ATTEMPTS = 25


class Batches:
    """Creates batches and reads them back."""

    def __init__(
        self,
        submitter: Submitter,
        jobs: JobLog,
        fleet: Fleet,
        limits: Limits,
        kv: KeyValue,
        max_jobs: int,
    ) -> None:
        self.submitter = submitter
        self.jobs = jobs
        self.fleet = fleet
        self.limits = limits
        self.kv = kv
        self.max_jobs = max_jobs

    async def create(
        self, principal: Principal, body: BatchCreate, request_id: str | None
    ) -> tuple[BatchRecord, list[JobRecord]]:
        """Check every request, then submit them all; the batch and its jobs' first records."""
        if len(body.jobs) > self.max_jobs:
            raise ApiError(
                422,
                ErrorCode.VALIDATION_ERROR,
                f"a batch holds at most {self.max_jobs} jobs",
                details={"errors": [{"field": "jobs", "message": f"at most {self.max_jobs}"}]},
            )
        default = lane_of(principal, body.priority or principal.lane or "batch")
        prepared = await self._prepare_all(principal, body, default)
        await self._check_capacity(principal, prepared)
        record = BatchRecord(
            id=new_batch_id(),
            owner=principal.owner,
            job_ids=[new_job_id() for _ in prepared],
            priority=default,
            created_at=utcnow(),
            metadata=body.metadata,
        )
        await self.limits.reserve_active(principal, len(prepared))
        try:
            async with nats_errors("recording the batch"):
                await self.kv.create(record.id, record.to_bytes())
        except Exception:
            await self.limits.release_active(principal, len(prepared))
            raise
        published: list[JobRecord] = []
        for index, (job_id, item) in enumerate(zip(record.job_ids, prepared, strict=True)):
            event = self.submitter.submitted(principal, item, job_id, request_id, record.id)
            try:
                await self.submitter.publish(principal, event, reserved=True)
            except Exception:
                # This job's slot went back in publish; the ones never tried go back here.
                await self.limits.release_active(principal, len(prepared) - index - 1)
                raise
            published.append(JobRecord.from_submitted(event))
        return record, published

    async def _prepare_all(
        self, principal: Principal, body: BatchCreate, default: Priority
    ) -> list[Prepared]:
        prepared, errors = [], []
        for index, job in enumerate(body.jobs):
            request = job if job.priority else job.model_copy(update={"priority": default})
            try:
                prepared.append(await self.submitter.prepare(principal, request))
            except ComfylineError as exc:
                errors.append(
                    {"index": index, "code": exc.code.value, "error": exc.message, **exc.details}
                )
        if errors:
            raise ApiError(
                422,
                ErrorCode.VALIDATION_ERROR,
                f"{len(errors)} of {len(body.jobs)} jobs are invalid; none was submitted",
                details={"errors": errors},
            )
        return prepared

    async def _check_capacity(self, principal: Principal, prepared: list[Prepared]) -> None:
        """Spend quota, and room in each model's queue (of each lane) for all of the jobs."""
        await self.limits.check_quota(principal)
        per_queue = Counter((p.template.name, p.priority) for p in prepared)
        templates = {p.template.name: p.template for p in prepared}
        for (name, lane), count in per_queue.items():
            depth = await self.fleet.queue_depth(name, fresh=True, lane=lane)
            self.limits.check_queue(principal, templates[name], depth + count - 1)

    async def get(self, principal: Principal, batch_id: str) -> BatchRecord:
        """The batch, if the caller may see it (404 for a missing id or another owner's)."""
        found = (
            await get_model(self.kv, batch_id, BatchRecord) if BATCH_ID.match(batch_id) else None
        )
        if found is None or not principal.may_see(found[0].owner):
            raise not_found("batch", batch_id=batch_id[:64])
        return found[0]

    async def members(self, record: BatchRecord) -> tuple[BatchRecord, list[JobRecord]]:
        """The batch's jobs as they are now, in submission order, and the batch.

        A job id that still has neither a record nor a submission :data:`LOST_AFTER_S` after the
        batch was made was never published (its gateway died mid-batch): it is recorded as lost,
        once, and its active-job slot given back, so the batch can still complete.
        """
        found = [await self.jobs.find(job_id) for job_id in record.job_ids]
        jobs = [job for job in found if job is not None]
        missing = [
            job_id
            for job_id, job in zip(record.job_ids, found, strict=True)
            if job is None and job_id not in record.lost
        ]
        if missing and (utcnow() - record.created_at).total_seconds() > LOST_AFTER_S:
            record = await self._mark_lost(record, missing)
        return record, jobs

    async def _mark_lost(self, record: BatchRecord, missing: list[str]) -> BatchRecord:
        newly: list[str] = []

        def step(current: BatchRecord) -> BatchRecord | None:
            newly[:] = [job_id for job_id in missing if job_id not in current.lost]
            return current.model_copy(update={"lost": [*current.lost, *newly]}) if newly else None

        record = await self._change(record.id, step)
        if newly:
            await self.limits.release_active(Principal(owner_id=record.owner), len(newly))
        return record

    async def mark_cancelled(self, record: BatchRecord) -> BatchRecord:
        """Record that the batch was cancelled (the first time only)."""

        def step(current: BatchRecord) -> BatchRecord | None:
            if current.cancelled_at is not None:
                return None
            return current.model_copy(update={"cancelled_at": utcnow()})

        return await self._change(record.id, step)

    async def _change(
        self, batch_id: str, step: Callable[[BatchRecord], BatchRecord | None]
    ) -> BatchRecord:
        """Apply ``step`` to the stored batch with compare-and-set (None: nothing to write)."""
        for attempt in range(1, _CAS_ATTEMPTS + 1):
            found = await get_model(self.kv, batch_id, BatchRecord)
            if found is None:
                raise not_found("batch", batch_id=batch_id)
            current, revision = found
            changed = step(current)
            if changed is None:
                return current
            try:
                async with nats_errors("updating the batch"):
                    await self.kv.update(batch_id, changed.to_bytes(), last=revision)
                return changed
            except KeyWrongLastSequenceError:
                await cas_pause(attempt)
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "the batch is contended; try again")
