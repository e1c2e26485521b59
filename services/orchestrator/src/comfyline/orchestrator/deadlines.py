"""Deadlines per model: how long a job may wait for a worker, and how long one run may take.

Both come from the catalogue (``ModelTemplate.deadlines``: ``queue_s`` and ``run_s``); a client's
``deadline_s`` can only shorten the run limit. Each is a durable timer (:mod:`.timers`):

- ``queue_deadline`` (attempt *k*): armed when the job is accepted (*k* = 1) and again whenever a
  run fails and is handed back for a retry (*k* = the next delivery). When it fires and delivery
  *k* has not started, the job ends ``timed_out`` with ``queue_deadline_exceeded``. A job sent
  to a live worker the moment it is accepted nearly always starts within milliseconds: its
  timer is armed only if, :data:`QUEUE_TIMER_DEFER_S` later (or at the deadline, if sooner),
  this process has not seen it start. Most jobs so never cost a timer (its publish, its
  delivery, its hand-back until due, its firing); a process that dies within that time leaves
  the job to the deadline sweep (:mod:`.sweep`), as a lost timer is, and one that stops arms
  every timer it deferred.
- ``run_deadline`` (attempt *n*): armed when delivery *n* starts. When it fires and that same
  delivery is still running, the job ends ``timed_out`` with ``deadline_exceeded``.

Either way ``control.cancel.<job_id>`` is sent, so a worker that holds the job stops it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from comfyline.catalogue import Catalogue, UnknownModel, run_limits
from comfyline.contracts import (
    Deadlines,
    ErrorCode,
    EventKind,
    JobError,
    JobRecord,
    JobState,
    ModelTemplate,
    Timer,
    utcnow,
)

from .journal import Journal
from .records import JobStore
from .timers import Timers
from .transitions import Step, Verdict, attempt_of, end, started

WAITING = frozenset({JobState.QUEUED, JobState.ENHANCING, JobState.DISPATCHED})

#: How long after a job is sent to a live worker its queue deadline is armed, if it has not
#: started by then (see the module's docstring).
QUEUE_TIMER_DEFER_S = 2.0

log = logging.getLogger(__name__)


def template_of(catalogue: Catalogue, record: JobRecord) -> ModelTemplate | None:
    """The template version the job was validated against (else the latest), or None."""
    for version in (record.template_version, None):
        try:
            return catalogue.get(record.model, version)
        except UnknownModel:
            continue
    return None


def limits(catalogue: Catalogue, record: JobRecord) -> Deadlines:
    """The job's queue and run limits: the model's, the run one shortened by the client's."""
    return run_limits(template_of(catalogue, record), record.deadline_s)


def queue_expired(record: JobRecord, attempt: int) -> bool:
    """True when delivery ``attempt`` has not started and the job is still waiting for it."""
    if record.status.terminal:
        return False
    if record.status in WAITING:
        return not started(record, attempt)
    return record.status is JobState.RUNNING and not any(
        a.number >= attempt and a.started_at is not None for a in record.attempt_log
    )


def run_expired(record: JobRecord, attempt: int) -> bool:
    """True when delivery ``attempt`` is the current one and still running."""
    current = attempt_of(record, attempt)
    return (
        record.status is JobState.RUNNING
        and record.attempts == attempt
        and current is not None
        and current.started_at is not None
        and current.finished_at is None
    )


class DeadlineKeeper:
    """Arms deadline timers and ends jobs whose deadline has passed."""

    def __init__(
        self, store: JobStore, journal: Journal, timers: Timers, catalogue: Catalogue
    ) -> None:
        self.store = store
        self.journal = journal
        self.timers = timers
        self.catalogue = catalogue
        self.defer_s = QUEUE_TIMER_DEFER_S
        self._deferred: dict[str, tuple[asyncio.TimerHandle, JobRecord]] = {}
        self._arming: set[asyncio.Task[None]] = set()
        timers.on("queue_deadline", self.on_queue_deadline)
        timers.on("run_deadline", self.on_run_deadline)

    def limits(self, record: JobRecord) -> Deadlines:
        """The job's limits (see :func:`limits`)."""
        return limits(self.catalogue, record)

    def queue_due(self, since: datetime, record: JobRecord) -> datetime:
        """When the job must have started, waiting since ``since``."""
        return since + timedelta(seconds=self.limits(record).queue_s)

    def run_due(self, since: datetime, record: JobRecord) -> datetime:
        """When a run that started at ``since`` must have ended."""
        return since + timedelta(seconds=self.limits(record).run_s)

    async def arm_queue(self, record: JobRecord, attempt: int) -> None:
        """Arm the queue deadline of delivery ``attempt`` at ``record.queue_deadline_at``."""
        if record.queue_deadline_at is None:
            return
        msg_id = f"{record.id}:timer:queue:{attempt}"
        await self.timers.arm(
            "queue_deadline", record.id, record.queue_deadline_at, msg_id, {"attempt": attempt}
        )

    def arm_queue_unless_started(self, record: JobRecord) -> None:
        """Arm the first delivery's queue deadline later, only if the job has not started then
        (``defer_s`` from now, or at the deadline if that is sooner)."""
        due = record.queue_deadline_at
        if due is None or record.id in self._deferred:
            return
        delay = min(self.defer_s, max(0.0, (due - utcnow()).total_seconds()))
        handle = asyncio.get_running_loop().call_later(delay, self._deferred_due, record.id)
        self._deferred[record.id] = (handle, record)

    def _deferred_due(self, job_id: str) -> None:
        _, record = self._deferred.pop(job_id)
        self._arm_if_waiting(record)

    def _arm_if_waiting(self, record: JobRecord) -> None:
        """Arm the deferred timer in the background unless the job is known to have started."""
        if self.store.ended_here(record.id):
            return
        known = self.store.last_write(record.id)
        if known is not None and not queue_expired(known, 1):
            return  # started since
        task = asyncio.create_task(self._arm_deferred(record), name=f"queue-timer-{record.id}")
        self._arming.add(task)
        task.add_done_callback(self._arming.discard)

    async def _arm_deferred(self, record: JobRecord) -> None:
        try:
            await self.arm_queue(record, 1)
        except Exception:
            log.warning(
                "could not arm a deferred queue deadline; the sweep will end the job if late",
                extra={"job_id": record.id},
                exc_info=True,
            )

    async def stop(self) -> None:
        """Arm now every deferred queue deadline of a job not seen started (the process stops)."""
        deferred = list(self._deferred.values())
        self._deferred.clear()
        for handle, record in deferred:
            handle.cancel()
            self._arm_if_waiting(record)
        if self._arming:
            await asyncio.gather(*self._arming, return_exceptions=True)

    async def arm_run(self, record: JobRecord, attempt: int) -> None:
        """Arm the run deadline of delivery ``attempt`` at ``record.run_deadline_at``."""
        if record.run_deadline_at is None:
            return
        msg_id = f"{record.id}:timer:run:{attempt}"
        await self.timers.arm(
            "run_deadline", record.id, record.run_deadline_at, msg_id, {"attempt": attempt}
        )

    async def on_queue_deadline(self, timer: Timer) -> None:
        """No worker started delivery *k* in time: the job times out."""
        attempt = int(timer.payload.get("attempt", 1))
        limit = self.limits
        now = max(utcnow(), timer.due_at)  # the job ends at its deadline, never before it

        def step(record: JobRecord) -> JobRecord | Verdict:
            if not queue_expired(record, attempt):
                return _replay_or_drop(record)
            error = JobError(
                code=ErrorCode.QUEUE_DEADLINE_EXCEEDED,
                message=f"no worker started the job within {limit(record).queue_s:g} s",
                retryable=True,
            )
            return end(record, EventKind.TIMED_OUT, error, now)

        await self._time_out(timer.job_id, step)

    async def on_run_deadline(self, timer: Timer) -> None:
        """Delivery *n* ran too long: the job times out and its worker is told to stop."""
        attempt = int(timer.payload.get("attempt", 1))
        limit = self.limits
        now = max(utcnow(), timer.due_at)  # the job ends at its deadline, never before it

        def step(record: JobRecord) -> JobRecord | Verdict:
            if not run_expired(record, attempt):
                return _replay_or_drop(record)
            error = JobError(
                code=ErrorCode.DEADLINE_EXCEEDED,
                message=f"the run took longer than {limit(record).run_s:g} s",
            )
            return end(record, EventKind.TIMED_OUT, error, now)

        await self._time_out(timer.job_id, step)

    async def _time_out(self, job_id: str, step: Step) -> None:
        change = await self.store.change(job_id, step)
        if change.effective:
            await self.journal.conclude(
                change.require(), replay=change.replay, stop_worker=True, reason="deadline passed"
            )


def _replay_or_drop(record: JobRecord) -> Verdict:
    """A deadline timer that finds the job already timed out replays that ending."""
    return Verdict.REPLAY if record.last_event is EventKind.TIMED_OUT else Verdict.DROP
