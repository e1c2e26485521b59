"""The deadline sweep: a second line behind the durable timers.

Every ``sweep_interval_s`` each orchestrator reads the job records it has not yet seen end and
ends, through the same steps as the timers (:mod:`.deadlines`), every job still waiting or
running past its deadline plus ``sweep_grace_s``. So even a timer that was lost costs at most
one interval: no job stays non-terminal past its deadline + grace + interval.

It is safe with any number of orchestrators: every change is a compare-and-set step that a job
already ended drops, exactly as a late timer is dropped. States only move forward, so a record
seen terminal is never read again by this process; a steady-state sweep reads only the jobs
that are still live (and lists the bucket's keys, which the server answers from its index).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from nats.js.errors import NoKeysError

from comfyline.contracts import Timer, utcnow
from comfyline.runtime import cancel_and_wait

from .deadlines import DeadlineKeeper, queue_expired, run_expired
from .records import JobStore
from .timers import TimerKind
from .transitions import attempt_of

log = logging.getLogger(__name__)

#: Records checked (and jobs ended) at once in one pass, so a pass over many late jobs is short.
SWEEP_CONCURRENCY = 32


class DeadlineSweep:
    """Ends jobs whose deadline passed without their timer firing."""

    def __init__(
        self,
        store: JobStore,
        deadlines: DeadlineKeeper,
        *,
        interval_s: float,
        grace_s: float,
    ) -> None:
        self.store = store
        self.deadlines = deadlines
        self.interval_s = interval_s
        self.grace_s = grace_s
        self._ended: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sweep every interval in the background until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="deadline-sweep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                ended = await self.sweep()
            except Exception:
                log.exception("deadline sweep failed; trying again next interval")
                continue
            if ended:
                log.warning("deadline sweep ended jobs whose timers did not", extra={"n": ended})

    async def sweep(self) -> int:
        """One pass; returns how many jobs it ended."""
        kv = await self.store.kv()
        try:
            keys = set(await kv.keys())
        except NoKeysError:
            keys = set()
        self._ended &= keys  # records past the bucket's TTL are gone for good
        gate = asyncio.Semaphore(SWEEP_CONCURRENCY)

        async def check(job_id: str) -> bool:
            async with gate:
                return await self._check(job_id)

        return sum(await asyncio.gather(*(check(j) for j in sorted(keys - self._ended))))

    async def _check(self, job_id: str) -> bool:
        snapshot = await self.store.get(job_id)
        if snapshot is None:
            return False
        record = snapshot.record
        if record.status.terminal:
            self._ended.add(job_id)
            return False
        late = utcnow() - timedelta(seconds=self.grace_s)
        current = attempt_of(record, record.attempts)
        running = current is not None and current.started_at is not None
        kind: TimerKind
        if running and current is not None and current.finished_at is None:
            due, kind, attempt = record.run_deadline_at, "run_deadline", record.attempts
            expired = run_expired(record, attempt)
        else:  # waiting for its first delivery, or for the next one after a failed attempt
            due, kind, attempt = record.queue_deadline_at, "queue_deadline", record.attempts + 1
            expired = queue_expired(record, attempt)
        if due is None or due >= late or not expired:
            return False
        timer = Timer(job_id=job_id, kind=kind, due_at=due, payload={"attempt": attempt})
        if kind == "run_deadline":
            await self.deadlines.on_run_deadline(timer)
        else:
            await self.deadlines.on_queue_deadline(timer)
        return True
