"""Workers' run events (``RUNS``), applied to the job record and announced on ``JOBS``.

Each :class:`~comfyline.contracts.RunEvent` becomes a step on the record (:mod:`.transitions`);
the rules, which hold whatever order the events arrive in and however often:

- ``attempt`` is the WORK message's delivery count; the record's ``attempts`` is the largest seen.
- ``started`` (delivery *n*): ``dispatched|running -> running``; a first start of *n* is announced
  (``<job_id>:started`` or ``:started:<n>``) and arms the run deadline of *n*; a repeat is replayed;
  a start of an older delivery is dropped.
- ``progress``: updates ``progress`` (at most every ``progress_min_interval_s`` per job, never
  backwards within one delivery); if its delivery's ``started`` has not been seen, it implies it.
- ``completed``: ``-> succeeded`` with the outputs; the first ending wins, any later one is dropped.
  A completion that overtakes its delivery's ``started`` (they reached two orchestrators) records
  and announces the start first.
- ``failed`` with ``final``: ``-> failed`` with the worker's code. Without ``final`` (the worker
  naked for a redelivery): the attempt is recorded, the state stays, and the next delivery gets a
  fresh queue deadline. Retries are JetStream redeliveries; the orchestrator never re-dispatches.
- ``cancelled``: the job was stopped on its worker; if it is not over already, it ends
  ``cancelled``.

GPU seconds are kept per attempt; the job's cost is their sum times the model's rate.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from nats.aio.msg import Msg

from comfyline.catalogue import Catalogue
from comfyline.contracts import (
    ErrorCode,
    EventKind,
    JobError,
    JobRecord,
    JobState,
    Progress,
    RunEvent,
    utcnow,
)
from comfyline.runtime import Delivery, Retry, job_id_var

from .deadlines import DeadlineKeeper, template_of
from .journal import Journal, event_msg_id
from .records import JobStore
from .settings import Settings
from .transitions import Verdict, advance, attempt_of, end, started, with_attempt
from .usage import job_cost

log = logging.getLogger(__name__)

#: How far before its report a worker's own account of when a run started is believed.
START_SKEW = timedelta(seconds=60)
#: How long a report for a job with no record yet is handed back (then dropped as unknown),
#: and how soon it comes back each time.
RECORD_WAIT = timedelta(minutes=5)
RECORD_RETRY_S = 0.05


def gpu_seconds(event: RunEvent, record: JobRecord, now: datetime) -> float:
    """The GPU time of the attempt: as the worker measured it, else wall time since its start."""
    if event.gpu_seconds is not None:
        return max(0.0, event.gpu_seconds)
    attempt = attempt_of(record, event.attempt)
    if attempt is not None and attempt.started_at is not None:
        return max(0.0, (now - attempt.started_at) / timedelta(seconds=1))
    return 0.0


class RunReports:
    """Applies the workers' reports to job records."""

    def __init__(
        self,
        store: JobStore,
        journal: Journal,
        deadlines: DeadlineKeeper,
        catalogue: Catalogue,
        settings: Settings,
    ) -> None:
        self.store = store
        self.journal = journal
        self.deadlines = deadlines
        self.catalogue = catalogue
        self.settings = settings

    async def handle(self, delivery: Delivery) -> None:
        """Apply one run event, then announce what changed."""
        event = delivery.parse(RunEvent)
        job_id_var.set(event.job_id)
        now = utcnow()
        seq = delivery.stream_seq
        if event.kind == "preview":
            await self._preview(event, seq)
            return
        implied_start: JobRecord | None = None  # the record as started, when the event implied it

        def step(record: JobRecord) -> JobRecord | Verdict:
            nonlocal implied_start
            implied_start = None
            if event.kind == "started":
                return self._started(record, event, now)
            if event.kind == "progress":
                result = self._progress(record, event, now)
                if isinstance(result, JobRecord) and not started(record, event.attempt):
                    implied_start = result
                return result
            if event.kind == "completed":
                implied_start = self._implied_start(record, event, now)
                return self._completed(implied_start or record, event, now)
            if event.kind == "failed":
                return self._failed(record, event, now)
            return self._cancelled(record, now)

        change = await self.store.change(event.job_id, step)
        if change.outcome == "missing":
            if now - event.occurred_at < RECORD_WAIT:
                # The work goes out with the record's creation (dispatch.py): a quick run's
                # report can come first. Handed back until the record is there.
                raise Retry("the job's record is not written yet", delay=RECORD_RETRY_S)
            log.warning("run event for an unknown job; dropped", extra={"kind": event.kind})
        if not change.effective:
            return
        record = change.require()
        if event.kind == "started" or implied_start is not None:
            start = self.journal.announce(
                implied_start or record,
                EventKind.STARTED,
                replay=change.replay,
                msg_id=event_msg_id(record.id, EventKind.STARTED, event.attempt),
            )
            if record.status.terminal and not change.replay:
                # A run that ended within the worker's started delay: both events go out at
                # once. The start is queued on the connection first, so the stream stores it
                # first.
                await asyncio.gather(start, self.journal.conclude(record))
                return
            await start
            if not record.status.terminal:
                await self.deadlines.arm_run(record, event.attempt)
        if event.kind == "progress":
            await self.journal.announce(
                record,
                EventKind.PROGRESS,
                progress=record.progress,
                msg_id=event_msg_id(record.id, EventKind.PROGRESS, seq=seq),
            )
        elif event.kind == "failed" and not event.final:
            await self.journal.announce(
                record,
                EventKind.RETRYING,
                replay=change.replay,
                msg_id=event_msg_id(record.id, EventKind.RETRYING, event.attempt),
                error=event.error,
                retry_in_s=event.retry_in_s,
            )
            await self.deadlines.arm_queue(record, event.attempt + 1)
        elif record.status.terminal:
            await self.journal.conclude(record, replay=change.replay)

    def _implied_start(self, record: JobRecord, event: RunEvent, now: datetime) -> JobRecord | None:
        """A completion with no ``started`` before it (the run ended within the worker's
        started delay, or its ``started`` is with another orchestrator): the record as started,
        so the start is written with the ending and announced before it and every run's story
        has its beginning. None when the start is known (or moot)."""
        active = record.status in (JobState.DISPATCHED, JobState.RUNNING)
        if not active or event.attempt < record.attempts or started(record, event.attempt):
            return None
        # A run shorter than the worker's started delay sends no started: its end says when.
        begun = advance(record, EventKind.STARTED, now, **self._start(record, event, now))
        return begun if isinstance(begun, JobRecord) else None

    # --- steps: pure functions of the record -----------------------------------------------------
    def _start(self, record: JobRecord, event: RunEvent, now: datetime) -> dict[str, Any]:
        """The updates that record delivery ``event.attempt`` as started when its worker says
        (within a minute before now: clocks differ), or now when it does not say."""
        if event.started_at is not None:
            now = max(min(event.started_at, now), now - START_SKEW)
        run_due = self.deadlines.run_due(now, record)
        return {
            "attempts": max(record.attempts, event.attempt),
            "started_at": record.started_at or now,
            "run_deadline_at": run_due,
            "progress": None,
            "waiting_reason": None,
            "attempt_log": with_attempt(
                record,
                event.attempt,
                worker_id=event.worker_id,
                server=event.server,
                started_at=now,
            ),
        }

    def _started(self, record: JobRecord, event: RunEvent, now: datetime) -> JobRecord | Verdict:
        if record.status.terminal or event.attempt < record.attempts:
            return Verdict.DROP
        if started(record, event.attempt):
            current = record.status is JobState.RUNNING and record.attempts == event.attempt
            return Verdict.REPLAY if current else Verdict.DROP
        return advance(record, EventKind.STARTED, now, **self._start(record, event, now))

    def _progress(self, record: JobRecord, event: RunEvent, now: datetime) -> JobRecord | Verdict:
        if record.status.terminal or event.attempt < record.attempts or event.progress is None:
            return Verdict.DROP
        if not started(record, event.attempt):
            begun = advance(record, EventKind.STARTED, now, **self._start(record, event, now))
            if isinstance(begun, Verdict):
                return Verdict.DROP
            return advance(begun, EventKind.PROGRESS, now, progress=event.progress)
        last = record.progress
        if last is not None and event.progress.percent < 100:
            if event.progress.percent <= last.percent:
                return Verdict.DROP
            if now - record.updated_at < timedelta(seconds=self.settings.progress_min_interval_s):
                return Verdict.DROP
        return advance(record, EventKind.PROGRESS, now, progress=event.progress)

    def _finish_attempt(
        self, record: JobRecord, event: RunEvent, now: datetime, outcome: str
    ) -> dict[str, Any]:
        """The updates that close delivery ``event.attempt`` and recompute the cost."""
        log_ = with_attempt(
            record,
            event.attempt,
            worker_id=event.worker_id,
            server=event.server,
            finished_at=now,
            gpu_seconds=gpu_seconds(event, record, now),
            outcome=outcome,
        )
        template = template_of(self.catalogue, record)
        rate = template.cost_per_gpu_second if template else 0.0
        return {
            "attempts": max(record.attempts, event.attempt),
            "attempt_log": log_,
            "cost": job_cost(log_, rate),
        }

    def _completed(self, record: JobRecord, event: RunEvent, now: datetime) -> JobRecord | Verdict:
        if record.status.terminal:
            return Verdict.REPLAY if record.last_event is EventKind.COMPLETED else Verdict.DROP
        last = record.progress
        done = Progress(
            percent=100,
            nodes_done=last.nodes_total if last else None,
            nodes_total=last.nodes_total if last else None,
        )
        return end(
            record,
            EventKind.COMPLETED,
            None,
            now,
            outputs=event.outputs,
            started_at=record.started_at or now,
            progress=done,
            **self._finish_attempt(record, event, now, "succeeded"),
        )

    def _failed(self, record: JobRecord, event: RunEvent, now: datetime) -> JobRecord | Verdict:
        error = event.error or JobError(
            code=ErrorCode.INTERNAL_ERROR, message="the worker reported a failure without a reason"
        )
        if event.final:
            if record.status.terminal:
                return Verdict.REPLAY if record.last_event is EventKind.FAILED else Verdict.DROP
            return end(
                record,
                EventKind.FAILED,
                error,
                now,
                **self._finish_attempt(record, event, now, f"failed:{error.code.value}"),
            )
        if record.status.terminal:
            return Verdict.DROP
        previous = attempt_of(record, event.attempt)
        if previous is not None and previous.finished_at is not None:
            return Verdict.REPLAY
        if record.status not in (JobState.DISPATCHED, JobState.RUNNING):
            return Verdict.DROP
        # Not a transition: the job stays where it is while JetStream redelivers it, and the next
        # delivery must start within the queue limit (unless a later one is already under way).
        updates: dict[str, Any] = {"updated_at": now}
        if event.attempt >= record.attempts:
            updates["queue_deadline_at"] = self.deadlines.queue_due(now, record)
            # Between attempts the job waits for a worker: no progress, and a reason that says so.
            after = f" in {event.retry_in_s:g} s" if event.retry_in_s is not None else ""
            updates["progress"] = None
            updates["waiting_reason"] = (
                f"waiting for a worker: attempt {event.attempt} failed ({error.code.value}); "
                f"attempt {event.attempt + 1} may start{after}"
            )
        return record.model_copy(
            update={
                **updates,
                **self._finish_attempt(record, event, now, f"retry:{error.code.value}"),
            }
        )

    def _cancelled(self, record: JobRecord, now: datetime) -> JobRecord | Verdict:
        if record.status.terminal:
            return Verdict.DROP
        error = JobError(code=ErrorCode.CANCELLED, message="the run was stopped on its worker")
        return end(record, EventKind.CANCELLED, error, now)

    async def _preview(self, event: RunEvent, seq: int) -> None:
        """A preview changes no state: announced only while that delivery is the running one."""
        found = await self.store.get(event.job_id)
        if found is None or event.preview is None:
            return
        record = found.record
        if record.status is JobState.RUNNING and record.attempts == event.attempt:
            await self.journal.announce(
                record,
                EventKind.PREVIEW,
                preview=event.preview,
                msg_id=event_msg_id(record.id, EventKind.PREVIEW, seq=seq),
            )


def run_job_key(msg: Msg) -> str | None:
    """The job id of a ``[<ns>.]runs.<job_id>.<kind>`` subject: one job's reports keep order."""
    parts = msg.subject.split(".")
    return parts[-2] if len(parts) >= 3 else None
