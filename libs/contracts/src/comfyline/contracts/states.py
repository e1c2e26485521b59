"""Job states, the one transition table, and the one naming table.

::

    queued -> enhancing -> dispatched -> running -> succeeded
       |          |            |            |  \\-> failed | cancelled | timed_out
       \\----------+------------+------------+----> failed | cancelled | timed_out

Every writer of job state goes through :func:`apply_event`; an impossible transition is refused
(:class:`TransitionRefused`), never applied, and a late or repeated event leaves the state as it
is (:func:`is_stale`). :data:`EVENT_NAMES` maps each event kind to its ``JOBS`` subject token, its
SSE event type, its WebSocket message type and its webhook event name, so the five never drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .errors import ComfylineError, ErrorCode


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    ENHANCING = "enhancing"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        """True once the job can never change again."""
        return self in TERMINAL_STATES


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}
)
ACTIVE_STATES: frozenset[JobState] = frozenset(set(JobState) - TERMINAL_STATES)

#: How far along each state is; states only ever move to a higher rank (or stay, for running).
RANK: dict[JobState, int] = {
    JobState.QUEUED: 0,
    JobState.ENHANCING: 1,
    JobState.DISPATCHED: 2,
    JobState.RUNNING: 3,
    JobState.SUCCEEDED: 4,
    JobState.FAILED: 4,
    JobState.CANCELLED: 4,
    JobState.TIMED_OUT: 4,
}

_ENDINGS = {JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}

#: The one transition table: from each state, the states it may move to.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.ENHANCING, JobState.DISPATCHED, *_ENDINGS}),
    JobState.ENHANCING: frozenset({JobState.DISPATCHED, *_ENDINGS}),
    JobState.DISPATCHED: frozenset({JobState.RUNNING, JobState.SUCCEEDED, *_ENDINGS}),
    # running -> running: progress, and a redelivered run starting again on another worker
    JobState.RUNNING: frozenset({JobState.RUNNING, JobState.SUCCEEDED, *_ENDINGS}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.TIMED_OUT: frozenset(),
}


class EventKind(StrEnum):
    """The kinds of event on a job's ``JOBS`` subjects (and the workers' ``RUNS`` subjects)."""

    SUBMITTED = "submitted"
    ENHANCED = "enhanced"
    DISPATCHED = "dispatched"
    STARTED = "started"
    PROGRESS = "progress"
    PREVIEW = "preview"
    STEP = "step"
    RETRYING = "retrying"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class EventNames:
    """One event kind under each of its five names."""

    state: JobState
    subject: str
    sse: str
    ws: str
    webhook: str


#: The one naming table: event kind -> the state it leads to and its name everywhere.
EVENT_NAMES: dict[EventKind, EventNames] = {
    EventKind.SUBMITTED: EventNames(
        JobState.QUEUED, "submitted", "queued", "job_update", "job.queued"
    ),
    EventKind.ENHANCED: EventNames(
        JobState.ENHANCING, "enhanced", "enhanced", "job_update", "job.enhanced"
    ),
    EventKind.DISPATCHED: EventNames(
        JobState.DISPATCHED, "dispatched", "dispatched", "job_update", "job.dispatched"
    ),
    EventKind.STARTED: EventNames(
        JobState.RUNNING, "started", "started", "job_update", "job.started"
    ),
    EventKind.PROGRESS: EventNames(
        JobState.RUNNING, "progress", "progress", "step_update", "job.progress"
    ),
    EventKind.PREVIEW: EventNames(
        JobState.RUNNING, "preview", "preview", "step_update", "job.preview"
    ),
    EventKind.STEP: EventNames(
        JobState.RUNNING, "step", "step_update", "step_update", "job.step_update"
    ),
    EventKind.RETRYING: EventNames(
        JobState.RUNNING, "retrying", "retrying", "job_update", "job.retrying"
    ),
    EventKind.WAITING: EventNames(
        JobState.QUEUED, "waiting", "waiting", "job_update", "job.waiting"
    ),
    EventKind.COMPLETED: EventNames(
        JobState.SUCCEEDED, "completed", "completed", "job_completed", "job.completed"
    ),
    EventKind.FAILED: EventNames(JobState.FAILED, "failed", "failed", "job_failed", "job.failed"),
    EventKind.CANCELLED: EventNames(
        JobState.CANCELLED, "cancelled", "cancelled", "job_failed", "job.cancelled"
    ),
    EventKind.TIMED_OUT: EventNames(
        JobState.TIMED_OUT, "timed_out", "timed_out", "job_failed", "job.timed_out"
    ),
}

#: The event that announces each state (the reverse of the table, for states that have one).
STATE_EVENT: dict[JobState, EventKind] = {
    JobState.QUEUED: EventKind.SUBMITTED,
    JobState.ENHANCING: EventKind.ENHANCED,
    JobState.DISPATCHED: EventKind.DISPATCHED,
    JobState.RUNNING: EventKind.STARTED,
    JobState.SUCCEEDED: EventKind.COMPLETED,
    JobState.FAILED: EventKind.FAILED,
    JobState.CANCELLED: EventKind.CANCELLED,
    JobState.TIMED_OUT: EventKind.TIMED_OUT,
}

TERMINAL_EVENTS: frozenset[EventKind] = frozenset(
    {EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED, EventKind.TIMED_OUT}
)


class TransitionRefused(ComfylineError):
    """A transition the table does not allow; it is never applied."""

    code = ErrorCode.INTERNAL_ERROR


class JobAlreadyTerminal(ComfylineError):
    """The job has ended; nothing can change it (cancel answers 409 with this code)."""

    code = ErrorCode.JOB_ALREADY_TERMINAL


def can_transition(current: JobState, target: JobState) -> bool:
    """True when the table allows ``current -> target``."""
    return target in TRANSITIONS[current]


def is_stale(current: JobState, target: JobState) -> bool:
    """True for an event that arrives late or twice: it would move the job backwards or nowhere.

    Such an event is acknowledged and dropped. ``running -> running`` is not stale (progress).
    """
    if current.terminal:
        return True
    if current is JobState.RUNNING and target is JobState.RUNNING:
        return False
    return RANK[target] <= RANK[current]


def check_transition(current: JobState, target: JobState) -> JobState:
    """Return ``target`` if ``current -> target`` is allowed, else raise.

    Raises:
        JobAlreadyTerminal: the job has already ended.
        TransitionRefused: the table does not allow it.
    """
    if current.terminal:
        raise JobAlreadyTerminal(
            f"job is already {current.value}", details={"status": current.value}
        )
    if not can_transition(current, target):
        raise TransitionRefused(
            f"refused transition {current.value} -> {target.value}",
            details={"from": current.value, "to": target.value},
        )
    return target


def state_after(current: JobState, kind: EventKind) -> JobState:
    """The state a job is in after an event of ``kind`` (checked against the table)."""
    return check_transition(current, EVENT_NAMES[kind].state)
