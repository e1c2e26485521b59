"""Pure changes to a job record, each checked against the one transition table in contracts.

Every handler turns what it received into a *step*: a function from the current record to either
the next record, or a :class:`Verdict` saying nothing is to be written:

- ``DROP``: the event is late or repeated and something else already moved the job on. It is
  acknowledged and forgotten.
- ``REPLAY``: the record already says exactly what this event would make it say (the process that
  wrote it may have died before announcing it). Nothing is written, but the event's effects
  (``JOBS`` event, work, timers) are driven again; each is idempotent, so this is safe.

A step that would make an impossible move raises :class:`~comfyline.contracts.TransitionRefused`
(from :func:`~comfyline.contracts.state_after`); it is logged and never applied.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from comfyline.contracts import (
    EVENT_NAMES,
    Attempt,
    EventKind,
    JobError,
    JobRecord,
    is_stale,
    state_after,
)


class Verdict(StrEnum):
    """What a step says when it has nothing to write."""

    DROP = "drop"
    REPLAY = "replay"


Step = Callable[[JobRecord], "JobRecord | Verdict"]


def advance(
    record: JobRecord, kind: EventKind, now: datetime, **updates: Any
) -> JobRecord | Verdict:
    """Move ``record`` by an event of ``kind``, through the transition table.

    Returns the new record, ``REPLAY`` when the record already ends on this very kind, or
    ``DROP`` when the event is stale. Raises ``TransitionRefused`` for an impossible move.
    """
    target = EVENT_NAMES[kind].state
    if is_stale(record.status, target):
        return Verdict.REPLAY if record.last_event is kind else Verdict.DROP
    status = state_after(record.status, kind)
    return record.model_copy(
        update={"status": status, "last_event": kind, "updated_at": now, **updates}
    )


def end(
    record: JobRecord, kind: EventKind, error: JobError | None, now: datetime, **updates: Any
) -> JobRecord | Verdict:
    """Finish the job with a terminal event (``completed``, ``failed``, ``cancelled``...)."""
    return advance(record, kind, now, finished_at=now, error=error, **updates)


def attempt_of(record: JobRecord, number: int) -> Attempt | None:
    """The record's entry for delivery ``number``, if there is one."""
    return next((a for a in record.attempt_log if a.number == number), None)


def started(record: JobRecord, number: int) -> bool:
    """True once delivery ``number`` has been reported started (or more)."""
    found = attempt_of(record, number)
    return found is not None and found.started_at is not None


def with_attempt(record: JobRecord, number: int, **fields: Any) -> list[Attempt]:
    """The attempt log with entry ``number`` created or updated by ``fields``."""
    log = [a for a in record.attempt_log if a.number != number]
    current = attempt_of(record, number) or Attempt(number=number)
    changes = {k: v for k, v in fields.items() if v is not None}
    log.append(current.model_copy(update=changes))
    return sorted(log, key=lambda a: a.number)
