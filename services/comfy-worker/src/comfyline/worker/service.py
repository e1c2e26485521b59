"""The worker: its ComfyUI servers, each kept one job ahead, joining and leaving the fleet.

``Worker(bus, store, catalogue, settings).run(stop)`` is the whole service (``__main__`` only
wires it). Each server gets a feed loop: wait until the server is up, able to run some model and
has room (``pipeline_depth`` jobs at once: one executing, the next already in ComfyUI's queue);
fetch one job for a model it can run and start it in its own task; repeat. A job's place is
given back as soon as ComfyUI has finished executing it, while its outputs go to S3 and its
message is settled. Consumers are
bound as servers reveal what they can run, so a new worker joins with no configuration change.
On ``stop``: no more fetching, running jobs get ``shutdown_grace_s`` to finish, then are naked
(their prompts interrupted), the heartbeat entry is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable
from functools import partial

from nats.aio.msg import Msg
from nats.js.errors import APIError

from comfyline.catalogue import Catalogue, UnknownModel
from comfyline.contracts import ModelTemplate, RunJob, bucket_spec, stream_spec
from comfyline.runtime import (
    Archiver,
    Bus,
    Delivery,
    FleetOrders,
    FreshOutputs,
    ObjectStore,
    cancel_and_wait,
    scan,
    settle,
)

from .affinity import Affinity
from .cancel import CancelListener
from .comfy_client import ComfyClient
from .fetch import Ring, WorkFetcher
from .handler import JobControl, JobHandler
from .leftovers import clear_leftovers
from .registry import Registry
from .servers import Lease, Server
from .settings import Settings

log = logging.getLogger(__name__)


async def _until(
    awaitable: Awaitable[object], stop: asyncio.Event, limit_s: float | None = None
) -> bool:
    """Wait for ``awaitable`` or ``stop`` (or ``limit_s``); True if the awaitable finished."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {task, stopper}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        await cancel_and_wait([task, stopper])
    return task in done


def _result(task: asyncio.Task[Msg | None]) -> Msg | None:
    """A finished fetch's message (None when it found none or failed)."""
    if task.cancelled() or task.exception() is not None:
        return None
    return task.result()


async def _give_back(msg: Msg) -> None:
    """Hand a fetched message back to its consumer for another worker to take now."""
    with contextlib.suppress(Exception):
        await msg.nak()


async def _either(*awaitables: Awaitable[object]) -> None:
    """Until the first of ``awaitables`` finishes (the others are cancelled)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(tasks)


class Worker:
    """Drives ``settings.comfyui_urls`` for the catalogue's models."""

    def __init__(
        self, bus: Bus, store: ObjectStore, catalogue: Catalogue, settings: Settings
    ) -> None:
        self.bus = bus
        self.store = store
        self.catalogue = catalogue
        self.settings = settings
        self.servers = [
            Server(
                ComfyClient(
                    url,
                    connect_timeout_s=settings.connect_timeout_s,
                    read_timeout_s=settings.read_timeout_s,
                    output_dir=settings.comfyui_output_dirs.get(url),
                ),
                self.allowed_templates,
                settings.pipeline_depth,
            )
            for url in settings.comfyui_urls
        ]
        self.cancels = CancelListener(bus)
        self.fetcher = WorkFetcher(
            bus, settings.ack_wait_s, bus.settings.request_timeout_s, sweep_s=settings.idle_poll_s
        )
        self.handler = JobHandler(bus, store, catalogue, settings, self.cancels)
        if settings.fresh.max_bytes > 0:
            self.handler.fresh = FreshOutputs(bus, settings.fresh)
            self.handler.archiver = Archiver(
                self.handler.fresh, store, moments=self.handler.moments
            )
        self.registry = Registry(
            bus,
            settings.worker_id,
            self.servers,
            settings.heartbeat_interval_s,
            jobs_gap_s=settings.jobs_report_gap_s,
        )
        self.orders = FleetOrders(bus)
        self.affinity = Affinity(self.fetcher, catalogue, settings.affinity_wait_s)
        self.jobs: set[asyncio.Task[str]] = set()
        self.moves: set[asyncio.Task[None]] = set()  # waiting jobs taken to idle servers
        #: Busy servers that left a model alone for their waiting slot because another server
        #: was idle for it: woken when any server takes a job (that one may be it).
        self._deferred: set[Server] = set()
        #: Pull requests held open by idle servers (see ``_to_hold``), until they answer.
        self._holds: dict[Server, asyncio.Task[Msg | None]] = {}
        self.completed_runs = 0

    def allowed_templates(self) -> list[ModelTemplate]:
        """The catalogue's models this worker may serve (the ``models`` allow-list, if any)."""
        allowed = self.settings.models
        return [t for t in self.catalogue if allowed is None or t.name in allowed]

    async def _declare(self) -> None:
        names = self.bus.names
        await self.bus.ensure_streams(stream_spec(names, s) for s in ("WORK", "RUNS"))
        await self.bus.ensure_buckets(bucket_spec(names, b) for b in ("jobs", "workers"))
        await self.store.ensure_bucket()
        if self.handler.archiver is not None:
            try:
                await self.handler.archiver.ensure()
            except APIError as exc:  # e.g. no JetStream storage left for the stream's size
                log.error(
                    "outputs are not kept fresh: the OUTPUTS stream cannot be declared; every "
                    "output goes to S3 on its job's path",
                    extra={"error": str(exc)},
                )
                self.handler.fresh = self.handler.archiver = None

    async def _on_up(self, server: Server) -> None:
        await self._clear_leftovers(server)
        await self._share_object_info(server)
        for name in server.models:
            await self.fetcher.bind(self.catalogue.get(name))
        self.registry.poke()
        # A server that looked for work before its models' consumers were bound waits for no
        # bell (a backlog rings none): look again now rather than after the idle poll.
        for each in self.servers:
            each.changed.set()

    async def _clear_leftovers(self, server: Server) -> None:
        """Delete the prompts a stopped worker left waiting on ``server`` (see leftovers.py)."""
        try:
            kv = await self.bus.kv(self.bus.names.bucket("workers"))
            live = [key for key, _ in await scan(kv, ">")]
            await clear_leftovers(
                server.client, self.settings.worker_id, self.handler.tag["session"], live
            )
        except Exception as exc:  # the next check tries again
            log.warning("leftover prompts not checked", extra={"error": str(exc)})

    async def _sweep_leftovers(self) -> None:
        """Now and then, for workers whose heartbeat expired since their server came up."""
        while True:
            await asyncio.sleep(self.settings.leftover_check_s)
            for server in self.servers:
                if server.healthy:
                    await self._clear_leftovers(server)

    async def _share_object_info(self, server: Server) -> None:
        """Store the server's ``/object_info`` where the gateway reads it (to validate and route
        ComfyUI graphs); content-addressed, so identical servers share one object."""
        info = server.object_info
        if info is None:
            return
        key = f"fleet/object_info/{hashlib.sha256(info).hexdigest()}.json"
        if key != server.object_info_key:
            try:
                await self.store.put_bytes(key, info, "application/json")
            except Exception as exc:  # the fleet runs templates without it
                log.warning("could not store object_info", extra={"error": str(exc)})
                return
            server.object_info_key = key

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then stop cleanly."""
        await self._declare()
        await self.cancels.start()
        await self.orders.start()
        await self.fetcher.start()
        background = [
            asyncio.create_task(
                s.monitor(self._on_up, self.settings.health_interval_s, self.settings.down_retry_s),
                name=f"health {s.url}",
            )
            for s in self.servers
        ]
        background.append(asyncio.create_task(self.registry.run(), name="heartbeat"))
        background.append(asyncio.create_task(self._follow_orders(), name="fleet orders"))
        background.append(asyncio.create_task(self._sweep_leftovers(), name="leftovers"))
        if self.handler.archiver is not None:
            background.append(asyncio.create_task(self.handler.archiver.run(), name="archive"))
        slots = [
            asyncio.create_task(self._feed(s, stop), name=f"feed {s.url}") for s in self.servers
        ]
        log.info(
            "worker started",
            extra={"worker_id": self.settings.worker_id, "servers": [s.url for s in self.servers]},
        )
        try:
            await stop.wait()
        finally:
            await self._shutdown(slots, background)

    async def _feed(self, server: Server, stop: asyncio.Event) -> None:
        """One server: keep up to ``pipeline_depth`` jobs of ours on it, fetching one whenever
        there is room, so ComfyUI starts the next job the moment one ends.

        A job is queued behind a busy server only when no idle server could take it now: never
        a model that another idle server of this worker runs, and, when the doorbell announces
        new work, only after ``pipeline_defer_s`` (idle servers anywhere fetch at once).

        An idle server that found nothing holds a pull request open on the model it ran last
        (``hold_pull_s``): that model's next job comes to it as it is stored, one round trip
        sooner than the doorbell and a request after it. A job of another model still starts
        at its bell meanwhile; the request is then taken back (a job it brought before that
        is the next one here: the pipeline has room for it; one arriving as it is taken back
        goes back to JetStream at once).
        """
        rung: list[tuple[str, str]] = []
        while not stop.is_set():
            # (each wait only when needed: it costs a few turns of the event loop per job)
            if not server.free and not await _until(server.wait_free(), stop):
                return
            if self.draining and not await _until(self._accepting(), stop):
                return
            held = self._holds.get(server)
            if held is not None and (held.done() or server.busy):
                # What the request brought is the server's next job; a job that started here
                # another way (another model's bell) takes the request back instead, so it
                # holds no place the pipeline wants for the next job.
                del self._holds[server]
                await cancel_and_wait([held])
                if (msg := _result(held)) is not None:
                    self._start_held(server, msg)
                continue
            ahead = server.busy
            server.changed.clear()
            models = [m for m in server.models if self.orders.paused(m) is None]
            if ahead:
                left = [m for m in models if not self._idle_elsewhere(server, m)]
                if len(left) < len(models):
                    self._deferred.add(server)
                models = left
                if rung and self.settings.pipeline_defer_s:
                    await _until(server.changed.wait(), stop, self.settings.pipeline_defer_s)
                    if server.changed.is_set():
                        continue  # a job ended (or the server fell): decide again
            with self.fetcher.bell.listen(models) as ring:
                candidates = await self.fetcher.may_have_work(models, sweep=not rung)
                msg = await self.fetcher.next_for(
                    candidates,
                    rung,
                    rotate=not self.settings.affinity,
                    order=partial(self.affinity.order, server) if self.settings.affinity else None,
                )
                if msg is None:
                    if not ahead and self._take_waiting(server, models):
                        continue  # a job waiting behind a busy server comes here instead
                    model = None if ahead else self._to_hold(server, models)
                    if model is None:
                        await _until(
                            _either(ring.wait(), server.changed.wait()),
                            stop,
                            limit_s=self.settings.idle_poll_s,
                        )
                        rung = list(ring.rung)
                        continue
                    held = self._holds.get(server)
                    if held is None:
                        take = partial(self._take_held, server, stop)
                        held = asyncio.create_task(
                            self.fetcher.hold(model, self.settings.hold_pull_s, take),
                            name=f"hold {server.url}",
                        )
                        self._holds[server] = held
                    rung = await self._while_held(held, ring, model, server, stop)
                    continue
            rung = []
            self._start(server, msg)

    def _to_hold(self, server: Server, models: list[str]) -> str | None:
        """The model whose next job an idle server waits for with a pull request held open:
        the one it ran last (its files are loaded), else its only one; None when it holds
        none (holding is off, or its pipeline has no second place for a job the request may
        bring just before it is taken back, another job having started here)."""
        if not self.settings.hold_pull_s or server.depth < 2:
            return None
        model = server.last_model if server.last_model in models else None
        if model is None and len(models) == 1:
            model = models[0]
        return model if model in self.fetcher.bound else None

    async def _while_held(
        self,
        held: asyncio.Task[Msg | None],
        ring: Ring,
        model: str,
        server: Server,
        stop: asyncio.Event,
    ) -> list[tuple[str, str]]:
        """Until the held pull request answers, work for another model or lane is announced
        (returned, to be asked for now), the server changes, or the worker stops. The bell of
        the held model's own interactive work is not an answer: that job comes with the held
        request (asking for it again would wait for a message the request has taken)."""
        mine = (model, "interactive")
        while not held.done() and not stop.is_set():
            others = [key for key in ring.rung if key != mine]
            if others:
                return others
            ring.rung.clear()
            ring.event.clear()
            await _until(_either(asyncio.shield(held), ring.wait(), server.changed.wait()), stop)
            if server.changed.is_set():
                break
        return [key for key in ring.rung if key != mine]

    def _take_held(self, server: Server, stop: asyncio.Event, msg: Msg) -> bool:
        """The job a held pull request brought, started (or given back) as it arrives; once the
        worker is stopping it is left to the request's end (the shutdown gives it back)."""
        if stop.is_set():
            return False
        self._start_held(server, msg)
        return True

    def _start_held(self, server: Server, msg: Msg) -> None:
        """Start what a held pull request brought, unless the server can no longer take it
        (fell, draining, model paused): then it goes back at once for another to take."""
        model = self.bus.names.work_key(msg.subject)[0] if msg.subject else None
        paused = model is not None and self.orders.paused(model) is not None
        if server.free and not self.draining and not paused:
            self._start(server, msg)
            return
        task = asyncio.create_task(_give_back(msg), name="give back held work")
        self.moves.add(task)
        task.add_done_callback(self.moves.discard)

    def _take_waiting(self, idle: Server, models: list[str]) -> bool:
        """``idle`` found no work: a job of ours waiting in a busy server's queue for one of
        ``models`` moves here if its prompt can still be taken back (see ``JobControl.move``).
        The place is held at once, and given back if the prompt started meanwhile."""
        for busy in self.servers:
            if busy is idle:
                continue
            for job_id in busy.jobs[1:]:
                control = self.handler.held.get(job_id)
                if control is None or not control.waiting or control.model not in models:
                    continue
                lease = self._place(idle, job_id)
                task = asyncio.create_task(self._move(control, lease), name=f"move {job_id}")
                self.moves.add(task)
                task.add_done_callback(self.moves.discard)
                return True
        return False

    def _place(self, server: Server, job_id: str) -> Lease:
        """Give ``job_id`` a place on ``server`` (the heartbeat says so); its lease frees it."""
        server.claim(job_id)
        if self._deferred:  # the idle server they left a model to may be this one
            for deferred in self._deferred - {server}:
                deferred.changed.set()
            self._deferred.clear()
        self.registry.jobs_moved()
        return Lease(server, job_id, self.registry.jobs_moved)

    async def _move(self, control: JobControl, lease: Lease) -> None:
        try:
            moved = await control.move(lease.server, lease)
        except Exception:
            log.warning("taking a waiting job back failed; it stays", exc_info=True)
            moved = False
        if not moved:
            lease.release()

    def _idle_elsewhere(self, server: Server, model: str) -> bool:
        """Another server of this worker, holding no job, could run ``model`` now."""
        return any(s is not server and s.idle and model in s.models for s in self.servers)

    @property
    def draining(self) -> bool:
        """An operator told this worker to finish its jobs and take no more."""
        return self.orders.draining(self.settings.worker_id)

    async def _accepting(self) -> None:
        """Until the worker is not draining."""
        while self.draining:
            await self.orders.changed.wait()

    async def _follow_orders(self) -> None:
        """Say in the heartbeat whether the worker is draining, as soon as that changes."""
        while True:
            if self.registry.draining != self.draining:
                self.registry.draining = self.draining
                log.info("worker draining" if self.draining else "worker resumed")
                self.registry.poke()
            await self.orders.changed.wait()

    def _start(self, server: Server, msg: Msg) -> None:
        """Give the job to ``server`` and run it in its own task; its lease frees the place."""
        delivery = Delivery.of(msg)
        try:
            work: RunJob | None = RunJob.from_bytes(delivery.data)
        except ValueError:
            work = None
        if work is not None:
            with contextlib.suppress(UnknownModel):  # the handler reports it
                server.load(self.catalogue.get(work.model, work.template_version), work.input)
        job_id = work.job_id if work else f"?{delivery.stream_seq}"

        async def handle(d: Delivery) -> None:
            await self.handler.handle(d, server, lease, work)

        # The job's task first, the place after: the job then runs (up to its prompt's post)
        # before whatever the place wakes (this server's feed, the heartbeat).
        task: asyncio.Task[str] = asyncio.create_task(
            settle(delivery, handle), name=f"job {job_id}"
        )
        lease = self._place(server, job_id)
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)
        task.add_done_callback(self._count)
        task.add_done_callback(lambda _: lease.release())

    def _count(self, task: asyncio.Task[str]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.registry.count(task.result())

    async def _shutdown(
        self, slots: list[asyncio.Task[None]], background: list[asyncio.Task[None]]
    ) -> None:
        log.info("worker stopping", extra={"running": len(self.jobs)})
        await asyncio.gather(*slots, return_exceptions=True)  # they return once stop is set
        if self._holds:  # held requests are taken back; a job one brought goes back at once
            holds, self._holds = list(self._holds.values()), {}
            await cancel_and_wait([h for h in holds if not h.done()])
            for held in holds:
                if (msg := _result(held)) is not None:
                    await _give_back(msg)
        if self.moves:  # a few requests each: let them settle where each job runs
            _, late_moves = await asyncio.wait(set(self.moves), timeout=5)
            await cancel_and_wait(late_moves)
        if self.jobs:
            _, late = await asyncio.wait(set(self.jobs), timeout=self.settings.shutdown_grace_s)
            for task in late:
                task.cancel()  # settle naks it; the run interrupts its prompt
            if late:
                await asyncio.wait(late, timeout=10)
        if self.handler.archiver is not None:  # what this worker kept, copied before it goes
            self.handler.moments.hurry()
            await self.handler.archiver.caught_up(within_s=10)
        await cancel_and_wait(background)
        await self.handler.close()
        with contextlib.suppress(Exception):
            await self.registry.remove()
        await self.fetcher.stop()
        await self.orders.stop()
        await self.cancels.stop()
        for server in self.servers:
            await server.client.aclose()
        await self.store.close()
        log.info("worker stopped")
