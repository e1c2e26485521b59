"""The orchestrator: the one writer of job state, wired from its parts.

::

    JOBS  jobs.*.*.submitted ──orchestrator-submissions──▶ Dispatcher ──▶ WORK work.<model>
    RUNS  runs.<job>.<kind>  ──orchestrator-runs─────────▶ RunReports
    TIMERS timers.<kind>.<job> ─orchestrator-timers──────▶ DeadlineKeeper, Webhooks
    JOBS  jobs.*.*.<terminal> ─orchestrator-usage────────▶ UsageBook ──▶ usage KV
    JOBS  steps.<pipeline>.>  ─orchestrator-pipelines────▶ Pipelines ──▶ the next steps
    $JS...MAX_DELIVERIES.WORK.* (core, queue group) ─────▶ DeadLetters ──▶ DEADLETTER
    orchestrator.cancel.v1 (request/reply, queue group) ─▶ Canceller ──▶ control.cancel.<job>

Every part writes job records only through :class:`~.records.JobStore` (compare-and-set) and
publishes job events only through :class:`~.journal.Journal` (once, after the write). Nothing is
kept only in memory: the work waits in JetStream, the state in KV, timers in ``TIMERS``; so any
number of orchestrators can run side by side, and one can die at any instant and be restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Self

from comfyline.catalogue import Catalogue
from comfyline.contracts.subjects import StreamName
from comfyline.runtime import Bus, FleetOrders, Handler, KeyOf, run_consumer

from .cancel import Canceller
from .deadletter import DeadLetters
from .deadlines import DeadlineKeeper
from .dispatch import Dispatcher
from .journal import Journal
from .pipelines import Pipelines, child_parent_key
from .prompts import PromptGate
from .records import JobStore
from .runs import RunReports, run_job_key
from .settings import Settings
from .sweep import DeadlineSweep
from .timers import Timers
from .topology import PIPELINES, RUNS, SUBMISSIONS, TIMERS, USAGE, declare, publish_catalogue
from .usage import UsageBook
from .webhooks import Webhooks
from .workers import WorkerDirectory

log = logging.getLogger(__name__)


class Orchestrator:
    """Consumes submissions, run events and timers; serves cancels; keeps usage.

    Use ``await run(stop)`` in a service, or ``async with Orchestrator(...)`` (``start``/``stop``)
    in tests. The bus is the caller's: it is neither connected nor closed here.
    """

    def __init__(self, bus: Bus, catalogue: Catalogue, settings: Settings) -> None:
        self.bus = bus
        self.catalogue = catalogue
        self.settings = settings
        self.store = JobStore(bus, cas_attempts=settings.cas_attempts)
        self.timers = Timers(bus)
        self.webhooks = Webhooks(bus, self.store, self.timers, settings.webhook)
        self.journal = Journal(bus, self.timers, self.webhooks)
        self.deadlines = DeadlineKeeper(self.store, self.journal, self.timers, catalogue)
        self.workers = WorkerDirectory(bus, ttl_s=settings.worker_ttl_s)
        self.orders = FleetOrders(bus)
        self.gate = PromptGate(bus, settings)
        self.pipelines = Pipelines(bus, self.store, self.journal, catalogue)
        self.dispatcher = Dispatcher(
            bus,
            self.store,
            self.journal,
            self.deadlines,
            self.gate,
            self.workers,
            catalogue,
            settings,
            self.pipelines,
            self.orders,
        )
        self.runs = RunReports(self.store, self.journal, self.deadlines, catalogue, settings)
        self.usage = UsageBook(bus, self.store, cas_attempts=settings.cas_attempts)
        self.dead_letters = DeadLetters(bus, self.store, self.journal)
        self.canceller = Canceller(bus, self.store, self.journal, self.pipelines.cancelled)
        self.timers.on("webhook", self.webhooks.fire)
        self.sweep = DeadlineSweep(
            self.store,
            self.deadlines,
            interval_s=settings.sweep_interval_s,
            grace_s=settings.sweep_grace_s,
        )
        self._stop = asyncio.Event()
        self._consumers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Declare what is used, publish the catalogue, and start consuming and serving."""
        await declare(self.bus, self.settings)
        if self.settings.publish_catalogue:
            await publish_catalogue(self.bus, self.catalogue)
        self.webhooks.start()
        await self.workers.start()
        await self.orders.start()
        await self.dead_letters.start()
        await self.canceller.start()
        self._stop.clear()
        s = self.settings
        self._spawn("JOBS", SUBMISSIONS, self.dispatcher.handle, s.submissions_concurrency)
        self._spawn("RUNS", RUNS, self.runs.handle, s.runs_concurrency, key=run_job_key)
        self._spawn("TIMERS", TIMERS, self.timers.handle, s.timers_concurrency)
        self._spawn("JOBS", USAGE, self.usage.handle, 1)
        self.sweep.start()
        self._spawn(
            "JOBS",
            PIPELINES,
            self.pipelines.on_child_event,
            s.runs_concurrency,
            key=child_parent_key,
        )
        log.info("orchestrator started", extra={"namespace": self.bus.names.namespace})

    def _spawn(
        self,
        stream: StreamName,
        durable: str,
        handler: Handler,
        concurrency: int,
        key: KeyOf | None = None,
    ) -> None:
        task = asyncio.create_task(
            run_consumer(
                self.bus,
                self.bus.names.stream(stream),
                self.bus.names.consumer(durable),
                handler,
                self._stop,
                concurrency=concurrency,
                key=key,
                fetch_timeout_s=self.settings.fetch_timeout_s,
                grace_s=self.settings.shutdown_grace_s,
            ),
            name=f"consumer-{durable}",
        )
        task.add_done_callback(self._consumer_ended)
        self._consumers.append(task)

    def _consumer_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not self._stop.is_set():
            log.error("a consumer stopped unexpectedly", exc_info=task.exception())

    async def stop(self) -> None:
        """Stop fetching, let in-flight work finish within the grace period, stop serving."""
        self._stop.set()
        await self.sweep.stop()
        await self.canceller.stop()
        await self.dead_letters.stop()
        if self._consumers:
            await asyncio.gather(*self._consumers, return_exceptions=True)
            self._consumers.clear()
        await self.deadlines.stop()
        await self.workers.stop()
        await self.orders.stop()
        await self.webhooks.close()
        log.info("orchestrator stopped")

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (SIGTERM/SIGINT in a service).

        A consumer that dies of an unexpected error stops the whole process (after a clean stop
        of the rest), so its supervisor restarts it rather than leaving it half-working.
        """
        await self.start()
        waiter = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([waiter, *self._consumers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            ended = [t for t in self._consumers if t.done()]
            with contextlib.suppress(Exception):
                await self.stop()
        if ended and not stop.is_set():
            cause = next((t.exception() for t in ended if not t.cancelled()), None)
            raise RuntimeError(f"consumer {ended[0].get_name()} stopped unexpectedly") from cause

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
