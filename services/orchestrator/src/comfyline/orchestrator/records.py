"""The ``jobs`` bucket: job records read, created and changed with compare-and-set.

The orchestrator is the only writer. Every change is a *step* (see :mod:`.transitions`) applied to
the record as last read; the write names the revision it read (``kv.update(last=revision)``), so
two orchestrators can never overwrite each other: the loser re-reads and applies its step again
to what the winner wrote, which usually makes the step a ``DROP`` or a ``REPLAY``.

A job's next change usually follows this process's own last write of it (dispatched, then
started, then completed), so the store remembers what it last wrote of each unfinished job and a
change tries that first without reading: one round trip instead of two. The compare-and-set
keeps this safe: if anyone wrote in between, the write is refused and the step is applied again
to a fresh read. A step that writes nothing (``DROP``, ``REPLAY``) is always decided on a fresh
read, never on what was remembered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from nats.js.errors import InvalidKeyError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from comfyline.contracts import ComfylineError, ErrorCode, JobRecord, TransitionRefused
from comfyline.runtime import Bus, Retry, cas_pause

from .transitions import Step, Verdict

log = logging.getLogger(__name__)

#: How many unfinished jobs' last writes are remembered (the oldest are forgotten first).
KNOWN_KEPT = 4096

Outcome = Literal["applied", "replay", "drop", "refused", "missing"]


class JobMissing(ComfylineError):
    """No record for that job id."""

    code = ErrorCode.NOT_FOUND


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A record as read, with the KV revision to compare-and-set against."""

    record: JobRecord
    revision: int


@dataclass(frozen=True, slots=True)
class Change:
    """What :meth:`JobStore.change` did, and the record as it now stands."""

    outcome: Outcome
    record: JobRecord | None
    revision: int = 0

    @property
    def effective(self) -> bool:
        """True when the event's effects must be driven: newly written, or replayed."""
        return self.outcome in ("applied", "replay")

    @property
    def replay(self) -> bool:
        """True when nothing was written because the record already said it."""
        return self.outcome == "replay"

    def require(self) -> JobRecord:
        """The record (only absent when the job is missing)."""
        if self.record is None:
            raise JobMissing("job record missing")
        return self.record


class JobStore:
    """Job records in the ``jobs`` bucket, changed only through compare-and-set."""

    def __init__(self, bus: Bus, *, cas_attempts: int = 25) -> None:
        self.bus = bus
        self.cas_attempts = cas_attempts
        self._bucket = bus.names.bucket("jobs")
        #: What this process last wrote of each unfinished job (see the module's docstring).
        self._known: dict[str, Snapshot] = {}
        #: The jobs this process last wrote finished (the most recent ``KNOWN_KEPT``).
        self._ended: dict[str, None] = {}

    async def kv(self) -> KeyValue:
        """The bucket handle."""
        return await self.bus.kv(self._bucket)

    async def get(self, job_id: str) -> Snapshot | None:
        """The record and its revision, or None when there is no such job."""
        kv = await self.kv()
        try:
            entry = await kv.get(job_id)
        except (KeyNotFoundError, InvalidKeyError):
            return None
        if entry.value is None or entry.revision is None:
            return None
        return Snapshot(JobRecord.from_bytes(entry.value), entry.revision)

    async def create(self, record: JobRecord) -> tuple[Snapshot, bool]:
        """Create the record; if it exists already (a redelivery), return it as it is.

        Returns the snapshot and whether this call created it.
        """
        kv = await self.kv()
        try:
            revision = await kv.create(record.id, record.to_bytes())
            return self._remember(Snapshot(record, revision)), True
        except KeyWrongLastSequenceError:
            found = await self.get(record.id)
            if found is None:  # pragma: no cover - created and deleted in between
                raise Retry("job record vanished while being created", delay=0.5) from None
            return found, False

    async def change(self, job_id: str, step: Step) -> Change:
        """Apply ``step`` to the current record and write the result with compare-and-set.

        On a concurrent write, re-read and apply ``step`` again. A refused transition is logged
        and reported as ``refused``; nothing is written.
        """
        kv = await self.kv()
        known = self._known.pop(job_id, None)
        for attempt in range(1, self.cas_attempts + 1):
            fresh = known is None  # decided on a read, not on what this store remembered
            current = known or await self.get(job_id)
            known = None
            if current is None:
                return Change("missing", None)
            try:
                result = step(current.record)
            except TransitionRefused as refused:
                if not fresh:
                    continue
                log.error(
                    "refused transition; not applied",
                    extra={"job_id": job_id, **refused.details, "reason": refused.message},
                )
                return Change("refused", current.record, current.revision)
            if isinstance(result, Verdict):
                if not fresh:
                    continue
                outcome: Outcome = "replay" if result is Verdict.REPLAY else "drop"
                return Change(outcome, current.record, current.revision)
            try:
                revision = await kv.update(job_id, result.to_bytes(), last=current.revision)
            except KeyWrongLastSequenceError:
                if fresh:  # another writer won a race: pause; a stale memory is just re-read
                    await cas_pause(attempt)
                continue
            self._remember(Snapshot(result, revision))
            return Change("applied", result, revision)
        raise Retry(f"job {job_id} is contended; will try again", delay=0.2)

    def last_write(self, job_id: str) -> JobRecord | None:
        """The unfinished job as this process last wrote it (None: not known here; another
        replica may have moved it since)."""
        known = self._known.get(job_id)
        return known.record if known is not None else None

    def ended_here(self, job_id: str) -> bool:
        """True when this process wrote the job's end (among the last ``KNOWN_KEPT``)."""
        return job_id in self._ended

    def _remember(self, snapshot: Snapshot) -> Snapshot:
        """Keep ``snapshot`` as the job's last write (a finished job is only listed as ended)."""
        job_id = snapshot.record.id
        self._known.pop(job_id, None)
        if not snapshot.record.status.terminal:
            if len(self._known) >= KNOWN_KEPT:
                del self._known[next(iter(self._known))]
            self._known[job_id] = snapshot
        else:
            if len(self._ended) >= KNOWN_KEPT:
                del self._ended[next(iter(self._ended))]
            self._ended[job_id] = None
        return snapshot
