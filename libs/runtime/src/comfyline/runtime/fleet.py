"""Operators' orders to the fleet (drained workers, paused models), as each process sees them.

Every process that acts on an order watches the ``fleet`` bucket: the orchestrator keeps a
paused model's jobs queued, a worker stops fetching when drained or for a paused model. The
watch starts from the bucket's current entries and follows every change, so an order given
while a process was down applies as soon as it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Self

from pydantic import ValidationError

from comfyline.contracts import ModelPause, WorkerDrain, bucket_spec
from comfyline.contracts.fleet import DRAIN_PREFIX, PAUSE_PREFIX

from .bus import Bus
from .kv import follow_bucket
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)


class FleetOrders:
    """The current drain orders and model pauses, kept current by watching ``fleet``."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.drains: dict[str, WorkerDrain] = {}
        self.pauses: dict[str, ModelPause] = {}
        self.changed = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def draining(self, worker_id: str) -> bool:
        """True while ``worker_id`` is told to drain."""
        return worker_id in self.drains

    def paused(self, model: str) -> ModelPause | None:
        """The pause of ``model``, if it is paused."""
        return self.pauses.get(model)

    async def start(self, timeout_s: float = 5.0) -> None:
        """Start watching; wait (bounded) until the bucket's current entries are loaded."""
        await self.bus.ensure_buckets([bucket_spec(self.bus.names, "fleet")])
        self._task = asyncio.create_task(
            follow_bucket(self.bus, "fleet", self._apply, self._ready.set), name="fleet orders"
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _apply(self, key: str, value: bytes | None) -> None:
        try:
            if key.startswith(DRAIN_PREFIX):
                worker_id = key.removeprefix(DRAIN_PREFIX)
                if value:
                    self.drains[worker_id] = WorkerDrain.from_bytes(value)
                else:
                    self.drains.pop(worker_id, None)
            elif key.startswith(PAUSE_PREFIX):
                model = key.removeprefix(PAUSE_PREFIX)
                if value:
                    self.pauses[model] = ModelPause.from_bytes(value)
                else:
                    self.pauses.pop(model, None)
        except ValidationError:
            log.warning("unreadable fleet order", extra={"key": key})
            return
        # Wake whoever waits for a change, then re-arm for the next one.
        self.changed.set()
        self.changed = asyncio.Event()
