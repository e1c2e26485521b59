"""The worker's entry in the ``workers`` KV bucket: who it is, what it serves, how busy it is.

Refreshed every few seconds (the bucket's TTL drops a worker that stops refreshing, so a dead
worker disappears by itself), at once when a server comes up or the worker starts or stops
draining, within ``jobs_gap_s`` when jobs start or end (one write then covers every job that
started or ended meanwhile: each write reaches every service watching the bucket, and a write
per job start and end was a fair share of a short job's messages), and deleted on a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime

from comfyline.contracts import WorkerHeartbeat, utcnow
from comfyline.runtime import Bus

from .servers import Server

log = logging.getLogger(__name__)


class Registry:
    """Announces one worker in ``workers``."""

    def __init__(
        self,
        bus: Bus,
        worker_id: str,
        servers: Sequence[Server],
        interval_s: float,
        jobs_gap_s: float = 0.0,
    ) -> None:
        self.bus = bus
        self.worker_id = worker_id
        self.servers = servers
        self.interval_s = interval_s
        self.jobs_gap_s = jobs_gap_s
        self.started_at: datetime = utcnow()
        self.draining = False
        self.jobs_done = 0
        self.jobs_failed = 0
        self._poke = asyncio.Event()
        self._jobs_moved = asyncio.Event()
        self._written_at = 0.0
        self._written_health: list[bool] = []

    def heartbeat(self) -> WorkerHeartbeat:
        """The entry as it is now."""
        models = sorted({m for s in self.servers if s.healthy for m in s.models})
        return WorkerHeartbeat(
            worker_id=self.worker_id,
            models=models,
            servers=[s.status() for s in self.servers],
            started_at=self.started_at,
            draining=self.draining,
            jobs_done=self.jobs_done,
            jobs_failed=self.jobs_failed,
        )

    def count(self, outcome: str) -> None:
        """One job's message was settled: ``ack`` counts as done, ``nak``/``term`` as failed."""
        if outcome == "ack":
            self.jobs_done += 1
        else:
            self.jobs_failed += 1
        self.jobs_moved()

    def poke(self) -> None:
        """Something changed: write the entry now rather than at the next interval."""
        self._poke.set()

    def jobs_moved(self) -> None:
        """A job started or ended: write the entry within ``jobs_gap_s`` of the last write (at
        once if a server's health changed with it: a run that lost its server)."""
        if self._health() != self._written_health:
            self._poke.set()
        self._jobs_moved.set()

    def _health(self) -> list[bool]:
        return [s.healthy for s in self.servers]

    async def _next_write(self) -> None:
        """Until a poke, or jobs moved and ``jobs_gap_s`` has passed since the last write."""
        poked = asyncio.ensure_future(self._poke.wait())
        moved = asyncio.ensure_future(self._jobs_moved.wait())
        try:
            await asyncio.wait([poked, moved], return_when=asyncio.FIRST_COMPLETED)
            if not poked.done():
                due = self._written_at + self.jobs_gap_s - asyncio.get_running_loop().time()
                if due > 0:
                    await asyncio.wait([poked], timeout=due)
        finally:
            poked.cancel()
            moved.cancel()

    async def beat(self) -> None:
        """Write the entry once."""
        kv = await self.bus.kv(self.bus.names.bucket("workers"))
        health = self._health()
        await kv.put(self.worker_id, self.heartbeat().to_bytes())
        self._written_health = health

    async def run(self) -> None:
        """Write the entry every interval (and when poked) until cancelled."""
        while True:
            try:
                await self.beat()
            except Exception:
                log.warning("heartbeat not written", exc_info=True)
            self._written_at = asyncio.get_running_loop().time()
            self._poke.clear()
            self._jobs_moved.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):  # never swallows a cancel
                    await self._next_write()

    async def remove(self) -> None:
        """Leave the fleet: delete the entry (a clean stop)."""
        kv = await self.bus.kv(self.bus.names.bucket("workers"))
        await kv.delete(self.worker_id)
