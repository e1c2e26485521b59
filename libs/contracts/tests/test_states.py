"""The transition table and the naming table: every allowed and every refused transition."""

from __future__ import annotations

import itertools

import pytest

from comfyline.contracts import (
    EVENT_NAMES,
    RANK,
    STATE_EVENT,
    TERMINAL_STATES,
    TRANSITIONS,
    EventKind,
    JobAlreadyTerminal,
    JobState,
    TransitionRefused,
    can_transition,
    check_transition,
    is_stale,
    state_after,
)

ALLOWED = {
    (JobState.QUEUED, JobState.ENHANCING),
    (JobState.QUEUED, JobState.DISPATCHED),
    (JobState.QUEUED, JobState.FAILED),
    (JobState.QUEUED, JobState.CANCELLED),
    (JobState.QUEUED, JobState.TIMED_OUT),
    (JobState.ENHANCING, JobState.DISPATCHED),
    (JobState.ENHANCING, JobState.FAILED),
    (JobState.ENHANCING, JobState.CANCELLED),
    (JobState.ENHANCING, JobState.TIMED_OUT),
    (JobState.DISPATCHED, JobState.RUNNING),
    (JobState.DISPATCHED, JobState.SUCCEEDED),
    (JobState.DISPATCHED, JobState.FAILED),
    (JobState.DISPATCHED, JobState.CANCELLED),
    (JobState.DISPATCHED, JobState.TIMED_OUT),
    (JobState.RUNNING, JobState.RUNNING),
    (JobState.RUNNING, JobState.SUCCEEDED),
    (JobState.RUNNING, JobState.FAILED),
    (JobState.RUNNING, JobState.CANCELLED),
    (JobState.RUNNING, JobState.TIMED_OUT),
}
PAIRS = list(itertools.product(JobState, JobState))


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=lambda s: s.value)
def test_each_pair_is_allowed_exactly_when_listed(current: JobState, target: JobState) -> None:
    expected = (current, target) in ALLOWED
    assert can_transition(current, target) is expected
    if expected:
        assert check_transition(current, target) is target
    elif current in TERMINAL_STATES:
        with pytest.raises(JobAlreadyTerminal):
            check_transition(current, target)
    else:
        with pytest.raises(TransitionRefused):
            check_transition(current, target)


def test_the_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(JobState)
    for state in TERMINAL_STATES:
        assert TRANSITIONS[state] == frozenset()


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=lambda s: s.value)
def test_states_only_move_forward(current: JobState, target: JobState) -> None:
    backwards = current.terminal or RANK[target] < RANK[current]
    repeated = RANK[target] == RANK[current] and (current, target) != (JobState.RUNNING,) * 2
    assert is_stale(current, target) is (backwards or repeated)
    if can_transition(current, target):
        assert not is_stale(current, target)


def test_a_late_start_after_completion_is_stale() -> None:
    assert is_stale(JobState.SUCCEEDED, JobState.RUNNING)
    assert is_stale(JobState.RUNNING, JobState.DISPATCHED)
    assert not is_stale(JobState.RUNNING, JobState.RUNNING)


def test_naming_table_is_complete_and_consistent() -> None:
    assert set(EVENT_NAMES) == set(EventKind)
    for kind, names in EVENT_NAMES.items():
        assert names.subject == kind.value
        assert names.webhook == f"job.{names.sse}"
        assert names.ws in {"job_update", "step_update", "job_completed", "job_failed"}
    for state, kind in STATE_EVENT.items():
        assert EVENT_NAMES[kind].state is state
    assert EVENT_NAMES[EventKind.COMPLETED].ws == "job_completed"
    assert EVENT_NAMES[EventKind.CANCELLED].ws == "job_failed"
    assert EVENT_NAMES[EventKind.TIMED_OUT].sse == "timed_out"


def test_state_after_applies_the_table() -> None:
    assert state_after(JobState.DISPATCHED, EventKind.STARTED) is JobState.RUNNING
    assert state_after(JobState.RUNNING, EventKind.PROGRESS) is JobState.RUNNING
    with pytest.raises(JobAlreadyTerminal):
        state_after(JobState.CANCELLED, EventKind.COMPLETED)
    with pytest.raises(TransitionRefused):
        state_after(JobState.QUEUED, EventKind.STARTED)
