"""The worker's entry in the ``workers`` KV bucket: who it is, what it serves, how busy it is.

Refreshed every few seconds (the bucket's TTL drops a worker that stops refreshing, so a dead
worker disappears by itself), at once when a server changes state, and deleted on a clean stop.
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
        self, bus: Bus, worker_id: str, servers: Sequence[Server], interval_s: float
    ) -> None:
        self.bus = bus
        self.worker_id = worker_id
        self.servers = servers
        self.interval_s = interval_s
        self.started_at: datetime = utcnow()
        self.draining = False
        self.jobs_done = 0
        self.jobs_failed = 0
        self._poke = asyncio.Event()

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
        self.poke()

    def poke(self) -> None:
        """Something changed: write the entry now rather than at the next interval."""
        self._poke.set()

    async def beat(self) -> None:
        """Write the entry once."""
        kv = await self.bus.kv(self.bus.names.bucket("workers"))
        await kv.put(self.worker_id, self.heartbeat().to_bytes())

    async def run(self) -> None:
        """Write the entry every interval (and when poked) until cancelled."""
        while True:
            try:
                await self.beat()
            except Exception:
                log.warning("heartbeat not written", exc_info=True)
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):  # never swallows a cancel
                    await self._poke.wait()

    async def remove(self) -> None:
        """Leave the fleet: delete the entry (a clean stop)."""
        kv = await self.bus.kv(self.bus.names.bucket("workers"))
        await kv.delete(self.worker_id)
