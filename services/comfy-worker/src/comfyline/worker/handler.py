"""One job, from the WORK message to its last run event: the worker's handler.

It never acks: it returns (-> ack) or raises ``Retry``/``Reject``, and ``settle`` does the rest.
:func:`outcome` is the one place that turns a failure into a ``failed`` event and an outcome: a
transient failure with deliveries left is reported ``final=False`` and naked with a delay;
anything else is reported ``final=True`` and terminated. A cancel is reported ``cancelled`` and
acked. The job's place on the server (its :class:`Lease`) is given back as soon as ComfyUI has
finished executing, so the next job is queued while this one's outputs stream to S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import ValidationError

from comfyline.catalogue import Catalogue, TemplateError, output_specs, prepare_input, render
from comfyline.contracts import (
    ComfylineError,
    ErrorCode,
    JobRecord,
    ModelTemplate,
    OutputRef,
    PreviewRef,
    RunJob,
    utcnow,
)
from comfyline.runtime import (
    Archiver,
    Bus,
    Delivery,
    FreshOutputs,
    LiveCatalogue,
    Moments,
    ObjectStore,
    Reject,
    Retry,
    backoff_delay,
    heartbeat,
    job_id_var,
    model_var,
    span,
    tracer,
)
from comfyline.runtime.metrics import RunClock

from .cancel import CancelListener
from .comfy_socket import ServerSocket
from .errors import RunCancelled, RunWithdrawn, WorkerError
from .folders import remove_run_folders, run_folder, saving_into
from .frames import Preview
from .inputs import InputResolver, upload_inputs
from .media import extension
from .outputs import RunOutputs
from .reporter import RunReporter
from .run import ComfyRun, RunOptions, RunResult
from .servers import Lease, Server
from .settings import Settings

log = logging.getLogger(__name__)
_tracer = tracer(__name__)


class JobControl:
    """A job this worker holds, as the cancel listener and the servers' feeds see it."""

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.run: ComfyRun | None = None
        self.reason: str | None = None
        #: Where the job goes on once its prompt is taken back (see :meth:`move`).
        self.moving_to: tuple[Server, Lease] | None = None

    async def cancel(self, reason: str) -> None:
        self.reason = reason
        if self.run is not None:
            await self.run.cancel()

    def check(self) -> None:
        if self.reason is not None:
            raise RunCancelled(self.reason)

    @property
    def waiting(self) -> bool:
        """Its prompt waits in a busy server's queue (not started)."""
        return self.run is not None and self.run.waiting and self.moving_to is None

    async def move(self, server: Server, lease: Lease) -> bool:
        """Run on ``server`` (its place held by ``lease``) instead, if the prompt can still be
        taken back from the queue it waits in: True when the job now goes there."""
        if self.run is None or self.reason is not None or self.moving_to is not None:
            return False
        self.moving_to = (server, lease)
        if await self.run.withdraw():
            return True
        self.moving_to = None
        return False


def as_worker_error(exc: BaseException) -> WorkerError:
    """Any failure as a :class:`WorkerError` (unknown ones are internal and transient)."""
    if isinstance(exc, WorkerError):
        return exc
    if isinstance(exc, ComfylineError):
        return WorkerError(exc.message, code=exc.code, details=exc.details)
    return WorkerError(
        f"{type(exc).__name__}: {exc}", code=ErrorCode.INTERNAL_ERROR, transient=True
    )


async def outcome(
    error: WorkerError,
    reporter: RunReporter,
    attempt: int,
    max_deliver: int,
    retry_base_s: float,
    gpu_seconds: float | None = None,
) -> Retry | Reject:
    """Report a failed attempt and say what becomes of the message."""
    retry = error.transient and attempt < max_deliver
    job_error = error.job_error().model_copy(update={"retryable": retry})
    delay = backoff_delay(attempt, retry_base_s)
    try:
        await reporter.failed(
            job_error, final=not retry, gpu_seconds=gpu_seconds, retry_in_s=delay if retry else None
        )
    except ComfylineError as exc:
        # Nobody heard of the failure: the job must come back rather than vanish.
        return Retry(f"failure not reported: {exc.message}", delay=backoff_delay(attempt, 1.0))
    if retry:
        return Retry(error.message, delay=delay, code=error.code)
    return Reject(error.message, code=error.code, details={"node_id": error.node_id})


class JobHandler:
    """Runs the jobs a worker fetches, each on the server that was free for it."""

    def __init__(
        self,
        bus: Bus,
        store: ObjectStore,
        catalogue: Catalogue,
        settings: Settings,
        cancels: CancelListener,
    ) -> None:
        self.bus = bus
        self.store = store
        self.catalogue = catalogue
        self.settings = settings
        self.cancels = cancels
        #: Where small outputs are kept while fresh (None: all to S3), and what copies them
        #: to S3: while its copies fail, outputs go to S3 on the job's path instead.
        self.fresh: FreshOutputs | None = None
        self.archiver: Archiver | None = None
        #: When background work goes (see comfyline.runtime.moments): each run marks itself,
        #: and a run's folder is removed at the next such moment.
        self.moments = Moments(settings.background_defer_s)
        self._chores: set[asyncio.Task[None]] = set()
        self.resolver = InputResolver(bus, store)
        self.sockets: dict[str, ServerSocket] = {}  # by server URL
        self.held: dict[str, JobControl] = {}  # by job id, while they run
        #: In every prompt's ``extra_data``: a later worker knows our leftovers by it.
        self.tag = {"worker_id": settings.worker_id, "session": uuid.uuid4().hex}

    async def handle(
        self, delivery: Delivery, server: Server, lease: Lease, parsed: RunJob | None = None
    ) -> None:
        """Run one delivery of a ``RunJob`` on ``server`` (``parsed``: its job, read already)."""
        try:
            run_job = parsed if parsed is not None else delivery.parse(RunJob)
        except ValidationError as exc:
            lease.release()
            raise Reject(f"not a RunJob: {exc}", code=ErrorCode.VALIDATION_ERROR) from exc
        job_id_var.set(run_job.job_id)
        model_var.set(run_job.model)
        attempt = delivery.num_delivered
        run_clock = RunClock.start(delivery, run_job.model)
        reporter = RunReporter(
            self.bus,
            job_id=run_job.job_id,
            attempt=attempt,
            worker_id=self.settings.worker_id,
            server=server.url,
            progress_interval_s=self.settings.progress_interval_s,
            started_delay_s=self.settings.started_delay_s,
            preview_store=self._preview_store(run_job) if self.settings.previews else None,
            preview_interval_s=self.settings.preview_interval_s,
        )
        control = JobControl(run_job.model)
        max_deliver = 1
        try:
            template = await self._template(run_job)
            max_deliver = template.retry_limit + 1
            async with heartbeat(delivery.msg, every=self.settings.ack_wait_s / 3):
                if await self._finished_elsewhere(run_job, delivery):
                    log.info("job already ended or cancelled; skipping")
                    return
                reason = self.cancels.register(run_job.job_id, control)
                self.held[run_job.job_id] = control
                try:
                    if reason is not None:
                        raise RunCancelled(reason)
                    while True:
                        try:
                            await self._run(run_job, template, server, reporter, control, lease)
                            break
                        except RunWithdrawn:  # an idle server takes it: run it there
                            assert control.moving_to is not None
                            lease.release()
                            server, lease = control.moving_to
                            control.moving_to, control.run = None, None
                            server.load(template, run_job.input)  # what it has loaded now
                            reporter.server = server.url
                            log.info("job moved to an idle server", extra={"server": server.url})
                finally:
                    self.held.pop(run_job.job_id, None)
                    self.cancels.unregister(run_job.job_id)
            run_clock.outcome = "succeeded"
        except RunCancelled as exc:
            run_clock.outcome = "cancelled"
            await reporter.cancelled(control.reason or exc.message, _gpu(control))
        except asyncio.CancelledError:
            # Shutdown past its grace period: settle naks the message; say so, briefly.
            error = WorkerError(
                "the worker stopped before the job finished",
                transient=True,
                code=ErrorCode.SERVICE_UNAVAILABLE,
            )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    reporter.failed(error.job_error(), attempt >= max_deliver, _gpu(control)), 2.0
                )
            raise
        except Exception as exc:
            error = as_worker_error(exc)
            if error.code == ErrorCode.COMFY_UNAVAILABLE:
                server.mark_down(error.message)
            log.warning(
                "job attempt failed",
                extra={"code": error.code.value, "error": error.message, "attempt": attempt},
            )
            raise await outcome(
                error, reporter, attempt, max_deliver, self.settings.retry_base_s, _gpu(control)
            ) from exc
        finally:
            lease.release()
            run_clock.stop()
            await reporter.stop_progress()

    async def close(self) -> None:
        """Do what background work is left, and close the servers' sockets (the worker
        stops)."""
        self.moments.hurry()
        if self._chores:
            await asyncio.wait(set(self._chores), timeout=10)
        for socket in self.sockets.values():
            await socket.close()

    def _socket(self, server: Server) -> ServerSocket:
        """``server``'s socket, kept open across its runs."""
        socket = self.sockets.get(server.url)
        if socket is None:
            socket = self.sockets[server.url] = ServerSocket(
                server.client,
                connect_timeout_s=self.settings.connect_timeout_s,
                previews=self.settings.previews,
            )
        return socket

    async def _template(self, run_job: RunJob) -> ModelTemplate:
        try:
            return self.catalogue.get(run_job.model, run_job.template_version)
        except ComfylineError:
            pass
        if isinstance(self.catalogue, LiveCatalogue):
            # Published moments ago (a new version): read the models bucket now, not next tick.
            await self.catalogue.refresh()
        try:
            return self.catalogue.get(run_job.model, run_job.template_version)
        except ComfylineError as exc:
            # Another worker with a newer catalogue may know this version.
            raise WorkerError(exc.message, code=ErrorCode.TEMPLATE_ERROR, transient=True) from exc

    async def _finished_elsewhere(self, run_job: RunJob, delivery: Delivery) -> bool:
        """True when the job's record says it ended or was cancelled (absent: run it).

        A first delivery published while the cancel listener was listening skips the read: the
        orchestrator sends ``control.cancel`` whenever it ends a job from outside (cancel,
        deadline, pipeline), and the listener remembers commands for jobs it does not hold yet,
        so ``cancels.register`` answers the same question without a KV round trip. Redeliveries
        (the job may have ended during an earlier attempt) always read the record.
        """
        if delivery.num_delivered == 1 and self.cancels.heard_since(delivery.published_at):
            return False
        kv = await self.bus.kv(self.bus.names.bucket("jobs"))
        try:
            entry = await kv.get(run_job.job_id)
        except Exception as exc:
            if type(exc).__name__ in {"KeyNotFoundError", "KeyDeletedError"}:
                return False
            raise WorkerError(
                f"jobs KV unreachable: {exc}", code=ErrorCode.SERVICE_UNAVAILABLE
            ) from exc
        if not entry.value:
            return False
        record = JobRecord.from_bytes(entry.value)
        return record.status.terminal or record.cancel_requested

    async def _run(
        self,
        run_job: RunJob,
        template: ModelTemplate,
        server: Server,
        reporter: RunReporter,
        control: JobControl,
        lease: Lease,
    ) -> None:
        left: float | None = None
        if run_job.deadline_at is not None:
            left = (run_job.deadline_at - utcnow()).total_seconds()
            if left <= 0:
                raise WorkerError(
                    "the job's deadline passed before it ran",
                    code=ErrorCode.DEADLINE_EXCEEDED,
                    transient=False,
                )
        data = prepare_input(template, run_job.input)
        files = await self.resolver.resolve(run_job, template, data)
        control.check()
        assets = await upload_inputs(
            server.client, self.store, files, self.settings.upload_subfolder, self.fresh
        )
        root = self.settings.output_subfolder
        try:
            graph = render(template, data, assets)
            outputs_wanted = output_specs(template, data)
        except TemplateError as exc:
            raise WorkerError(exc.message, code=ErrorCode.TEMPLATE_ERROR, transient=False) from exc
        graph = saving_into(graph, run_folder(root, run_job.job_id, reporter.attempt), root)
        fresh = self.fresh if self.archiver is None or not self.archiver.stalled else None
        outputs = RunOutputs(server.client, self.store, run_job, outputs_wanted, fresh)
        run = ComfyRun(
            server.client,
            graph,
            outputs_wanted,
            reporter,
            RunOptions(
                deadline_s=float(template.deadlines.run_s),
                queue_limit_s=left,
                watchdog_s=self.settings.watchdog_s,
                connect_timeout_s=self.settings.connect_timeout_s,
                previews=self.settings.previews,
            ),
            extra_data={"comfyline": self.tag | {"job_id": run_job.job_id}},
            shared=self._socket(server),
            settled=outputs.reported,
            mark=self.moments.mark(),
        )
        control.run = run
        control.check()
        attributes = {
            "comfyui.server": server.url,
            "comfyui.prompt_id": run.prompt_id,
            "comfyline.model": template.name,
            "comfyline.job_id": run_job.job_id,
        }

        async def keep(result: RunResult) -> list[OutputRef]:
            if not result.files:
                raise WorkerError("the run made no output files", code=ErrorCode.COMFY_NO_OUTPUT)
            with span(_tracer, "store outputs", attributes=attributes):
                return await outputs.stored(result.files)

        try:
            with span(_tracer, "comfyui run", attributes=attributes):
                # Outputs stream to S3 from the frames that report them on; once ComfyUI's
                # done marker came, the lease is given back and the next job may be queued.
                result, refs = await run.execute(keep, free=lease.release)
        except BaseException:
            await asyncio.shield(outputs.discard())
            self._tidy(server, run_job, reporter.attempt)
            raise
        await reporter.completed(refs, result.gpu_seconds)
        self._tidy_later(server, run_job, reporter.attempt)
        log.info(
            "job completed",
            extra={
                "outputs": len(refs),
                "gpu_seconds": result.gpu_seconds,
                "cached": result.cached,
            },
        )

    def _tidy_later(self, server: Server, run_job: RunJob, attempt: int) -> None:
        """:meth:`_tidy` at the next moment for background work (the job's client is being
        answered now)."""
        if self._run_folders(server) is None:
            return

        async def chore() -> None:
            await self.moments.wait()
            self._tidy(server, run_job, attempt)

        task = asyncio.create_task(chore(), name=f"tidy {run_job.job_id}")
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def _tidy(self, server: Server, run_job: RunJob, attempt: int) -> None:
        """Remove the job's run folders from the server's output folder, when this worker reads
        it and is not told to keep them (see folders.py); never fails the job."""
        output_dir = self._run_folders(server)
        if output_dir is None:
            return
        try:
            remove_run_folders(output_dir, self.settings.output_subfolder, run_job.job_id, attempt)
        except Exception:
            log.warning("run folder not removed", exc_info=True)

    def _run_folders(self, server: Server) -> Path | None:
        """``server``'s output folder, when this worker reads it and removes runs' folders
        from it (not told to keep them)."""
        if self.settings.keep_comfyui_outputs:
            return None
        return server.client.output_dir

    def _preview_store(self, run_job: RunJob) -> Callable[[Preview], Awaitable[PreviewRef]]:
        async def store(preview: Preview) -> PreviewRef:
            ext = extension("x." + preview.content_type.rsplit("/", 1)[-1])
            key = f"{run_job.output_prefix}preview.{'jpg' if ext == 'jpeg' else ext}"
            await self.store.put_bytes(key, preview.image, preview.content_type)
            return PreviewRef(key=key, content_type=preview.content_type, node_id=preview.node_id)

        return store


def _gpu(control: JobControl) -> float | None:
    return control.run.tracker.gpu_seconds if control.run is not None else None
