"""The state machine: every allowed and every refused transition, from an independent table.

The expected table below is written out by hand from the design (docs/architecture.md, "The
orchestrator: state machine"), so a change to ``TRANSITIONS`` in contracts that the design does
not allow fails here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import product

import pytest

from comfyline.contracts import (
    EVENT_NAMES,
    TRANSITIONS,
    ErrorCode,
    EventKind,
    JobAlreadyTerminal,
    JobError,
    JobRecord,
    JobState,
    TransitionRefused,
    can_transition,
    check_transition,
    is_stale,
)
from comfyline.orchestrator import Verdict, advance, end

Q, E, D, R = JobState.QUEUED, JobState.ENHANCING, JobState.DISPATCHED, JobState.RUNNING
S, F, C, T = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT
ENDINGS = {F, C, T}

#: From each state, where a job may go (the design's table, written out independently).
ALLOWED: dict[JobState, set[JobState]] = {
    Q: {E, D, *ENDINGS},
    E: {D, *ENDINGS},
    D: {R, S, *ENDINGS},
    R: {R, S, *ENDINGS},
    S: set(),
    F: set(),
    C: set(),
    T: set(),
}
#: Moves that are neither allowed nor backwards: refused, logged, never applied.
REFUSED_FORWARD = {(Q, R), (Q, S), (E, R), (E, S)}
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PAIRS = list(product(JobState, JobState))


def record_in(state: JobState, last: EventKind | None = None) -> JobRecord:
    """A record in ``state`` whose last event is the one that announces it (or ``last``)."""
    announcing = {v.state: k for k, v in reversed(list(EVENT_NAMES.items()))}
    return JobRecord(
        id="job_01kax7r2m0a1b2c3d4e5f6g7h8",
        owner="u1",
        model="cpu-smoke",
        template_version=1,
        status=state,
        created_at=NOW,
        updated_at=NOW,
        input={},
        last_event=last or announcing[state],
    )


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_the_contract_table_is_the_designed_one(current: JobState, target: JobState) -> None:
    """``TRANSITIONS`` and ``can_transition`` match the design, pair by pair."""
    assert (target in TRANSITIONS[current]) == (target in ALLOWED[current])
    assert can_transition(current, target) == (target in ALLOWED[current])


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_check_transition_allows_or_refuses(current: JobState, target: JobState) -> None:
    """Allowed pairs pass; an ended job refuses with ``job_already_terminal``; others refuse."""
    if target in ALLOWED[current]:
        assert check_transition(current, target) is target
    elif current.terminal:
        with pytest.raises(JobAlreadyTerminal) as ended:
            check_transition(current, target)
        assert ended.value.code.value == "job_already_terminal"
    else:
        with pytest.raises(TransitionRefused):
            check_transition(current, target)


KIND_PAIRS = [(s, k) for s, k in product(JobState, EventKind) if k is not EventKind.SUBMITTED]


@pytest.mark.parametrize(("current", "kind"), KIND_PAIRS, ids=[f"{s}+{k}" for s, k in KIND_PAIRS])
def test_advance_applies_drops_replays_or_refuses(current: JobState, kind: EventKind) -> None:
    """Every state x event: applied (allowed), dropped (late), replayed (same) or refused."""
    target = EVENT_NAMES[kind].state
    record = record_in(current)
    backwards = is_stale(current, target)
    if (current, target) in REFUSED_FORWARD:
        with pytest.raises(TransitionRefused):
            advance(record, kind, NOW)
    elif backwards:
        expected = Verdict.REPLAY if record.last_event is kind else Verdict.DROP
        assert advance(record, kind, NOW) is expected
    else:
        assert target in ALLOWED[current]
        moved = advance(record, kind, NOW, attempts=3)
        assert isinstance(moved, JobRecord)
        assert (moved.status, moved.last_event, moved.attempts) == (target, kind, 3)
        assert record.status is current  # the input is never changed in place


def test_states_only_move_forward() -> None:
    """No allowed move lowers the state; only running may repeat (progress, a redelivery)."""
    order = [Q, E, D, R, S]
    for current, targets in ALLOWED.items():
        for target in targets:
            if target in ENDINGS or current in ENDINGS:
                continue
            assert order.index(target) > order.index(current) or current is target is R


def test_end_records_the_error_and_time() -> None:
    """A terminal event sets ``finished_at`` and the error; a second ending is dropped."""
    error = JobError(code=ErrorCode.DEADLINE_EXCEEDED, message="too slow")
    ended = end(record_in(R), EventKind.TIMED_OUT, error, NOW)
    assert isinstance(ended, JobRecord)
    assert (ended.status, ended.finished_at, ended.error) == (T, NOW, error)
    assert end(ended, EventKind.COMPLETED, None, NOW) is Verdict.DROP
    assert end(ended, EventKind.TIMED_OUT, error, NOW) is Verdict.REPLAY


def test_progress_while_running_is_not_stale() -> None:
    """``running -> running`` applies (progress, a redelivered start)."""
    moved = advance(record_in(R, EventKind.STARTED), EventKind.PROGRESS, NOW)
    assert isinstance(moved, JobRecord) and moved.last_event is EventKind.PROGRESS
