"""A job's run events on ``runs.<job_id>.<kind>``, with deterministic message ids.

``started``, ``completed``, ``failed`` and ``cancelled`` use ``<job_id>:<attempt>:<kind>``, so a
repeated publish is dropped by the stream; progress adds a counter
(``<job_id>:<attempt>:progress:<n>``) and is throttled: the latest value is sent at most once per
interval by a background task, so a chatty sampler never slows the frame loop.

``started`` is published in the background too (the frame loop goes on to the run's end while
its ack comes back), ``started_delay_s`` after ComfyUI started the prompt, and always before
anything after it: progress and previews wait for it, and so does the final event, which it must
precede on ``RUNS``. A run that succeeds within that delay sends no ``started``: its
``completed`` carries ``started_at`` and the orchestrator records and announces the start with
the end. One event instead of two, and the orchestrator's work for the other (a record write, a
job event, a deadline timer) is not done while the run's outputs are on their way to S3. A run
that fails or is cancelled sends its pending ``started`` at once, before its final event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from comfyline.contracts import (
    JobError,
    OutputRef,
    PreviewRef,
    Progress,
    RunEvent,
    RunEventKind,
    utcnow,
)
from comfyline.runtime import Bus, cancel_and_wait

from .frames import Preview

log = logging.getLogger(__name__)
PreviewStore = Callable[[Preview], Awaitable[PreviewRef]]


class RunReporter:
    """Publishes the events of one attempt of one job."""

    def __init__(
        self,
        bus: Bus,
        *,
        job_id: str,
        attempt: int,
        worker_id: str,
        server: str,
        progress_interval_s: float = 0.5,
        preview_store: PreviewStore | None = None,
        preview_interval_s: float = 2.0,
        started_delay_s: float = 0.0,
    ) -> None:
        self.bus = bus
        self.job_id = job_id
        self.attempt = attempt
        self.worker_id = worker_id
        self.server = server
        self.prompt_id: str | None = None
        self.interval = progress_interval_s
        self.progress_sent = 0
        self.was_started = False
        self.started_at: datetime | None = None
        self.started_delay = started_delay_s
        self._start_due = asyncio.Event()  # set: send ``started`` now (the delay is over)
        self._latest: Progress | None = None
        self._pending = asyncio.Event()
        self.previews_sent = 0
        self._store_preview = preview_store
        self.preview_interval = preview_interval_s
        self._latest_preview: Preview | None = None
        self._preview_pending = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._start: asyncio.Task[None] | None = None
        #: Cancelled, their ends not awaited yet (see ``stop_progress``).
        self._stopping: list[asyncio.Task[None]] = []
        #: When the run started, if its ``started`` was taken back at its end (``run_over``).
        self._unsent_at: datetime | None = None

    async def _publish(self, kind: RunEventKind, msg_id: str, **fields: object) -> None:
        event = RunEvent(
            job_id=self.job_id,
            kind=kind,
            attempt=self.attempt,
            worker_id=self.worker_id,
            server=self.server,
            prompt_id=self.prompt_id,
            **fields,
        )
        await self.bus.publish(self.bus.names.run_event(self.job_id, kind), event, msg_id=msg_id)

    def _id(self, kind: str) -> str:
        return f"{self.job_id}:{self.attempt}:{kind}"

    # --- RunListener -------------------------------------------------------------------------
    async def started(self, prompt_id: str) -> None:
        """ComfyUI started executing our prompt (sent once per attempt)."""
        self.prompt_id = prompt_id
        if self.was_started:
            return
        self.was_started = True
        self.started_at = utcnow()
        self._start = asyncio.create_task(self._send_started())
        self._start.add_done_callback(_observed)
        if not self._tasks:
            self._tasks.append(asyncio.create_task(self._send_progress()))
            if self._store_preview is not None:
                self._tasks.append(asyncio.create_task(self._send_previews()))

    async def _send_started(self) -> None:
        if self.started_delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._start_due.wait(), self.started_delay)
        self._start_due.set()  # going out: no longer taken back by a quick ending
        await self._publish("started", self._id("started"), started_at=self.started_at)

    def progress(self, progress: Progress) -> None:
        """Remember the latest progress; the sender publishes it when the interval allows."""
        self._latest = progress
        self._pending.set()

    def preview(self, preview: Preview) -> None:
        """Remember the latest preview image (stored and reported when previews are on)."""
        if self._store_preview is not None:
            self._latest_preview = preview
            self._preview_pending.set()

    async def _started_sent(self, must: bool = True, hurry: bool = True) -> None:
        """Until ``started`` is on ``RUNS`` (sent now if ``hurry``, else when its delay is
        over); its failure is raised when ``must`` (the job must then come back rather than end
        with no start), else only logged."""
        if self._start is None:
            return
        if hurry:
            self._start_due.set()
        try:
            await asyncio.shield(self._start)
        except asyncio.CancelledError:
            if not self._start.cancelled():
                raise
        except Exception:
            if must:
                raise
            log.warning("started event not published", exc_info=True)

    async def _send_progress(self) -> None:
        # The first one too comes an interval after the start: a run shorter than that reports
        # none (its start and its end say all there is), and spares every service the work of
        # relaying it while the run's outputs are on their way.
        last = time.monotonic()
        await self._started_sent(must=False, hurry=False)
        while True:
            await self._pending.wait()
            wait = self.interval - (time.monotonic() - last)
            if wait > 0:
                await asyncio.sleep(wait)
            self._pending.clear()
            progress, self._latest = self._latest, None
            if progress is None:
                continue
            self.progress_sent += 1
            try:
                await self._publish(
                    "progress", self._id(f"progress:{self.progress_sent}"), progress=progress
                )
            except Exception:
                log.warning("progress event not published", exc_info=True)
            last = time.monotonic()

    async def _send_previews(self) -> None:
        assert self._store_preview is not None
        await self._started_sent(must=False, hurry=False)
        while True:
            await self._preview_pending.wait()
            self._preview_pending.clear()
            preview, self._latest_preview = self._latest_preview, None
            if preview is None:
                continue
            try:
                ref = await self._store_preview(preview)
                self.previews_sent += 1
                await self._publish(
                    "preview", self._id(f"preview:{self.previews_sent}"), preview=ref
                )
            except Exception:
                log.warning("preview not stored", exc_info=True)
            await asyncio.sleep(self.preview_interval)

    def run_over(self) -> None:
        """The run's end frame came: its progress and previews stop now, beside the storing of
        its outputs, rather than in front of the final event, and a ``started`` still waiting
        out its delay is taken back (the final event says when the run began, or sends it).
        All are cancelled at once: none of them publishes after this."""
        start = self._start
        if start is not None and not start.done() and not self._start_due.is_set():
            self._unsent_at = self.started_at
            self._start = None
            self._stop([start])
        self._stop(self._tasks)
        self._tasks = []

    def _stop(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        self._stopping += tasks

    def _start_again(self) -> None:
        """A run that did not end in ``completed`` sends the ``started`` taken back when it
        was over (see ``run_over``), as it would have sent it then."""
        if self._unsent_at is not None:
            at, self._unsent_at = self._unsent_at, None
            self._start_due.set()
            self._start = asyncio.create_task(
                self._publish("started", self._id("started"), started_at=at)
            )
            self._start.add_done_callback(_observed)

    async def stop_progress(self) -> None:
        """No more progress or previews: the run is over (a final event follows, or went)."""
        self._stop(self._tasks)
        self._tasks = []
        stopping, self._stopping = self._stopping, []
        await cancel_and_wait(stopping)

    # --- final events ------------------------------------------------------------------------
    async def completed(self, outputs: list[OutputRef], gpu_seconds: float) -> None:
        """Every output is stored: the job succeeded. Published at once after the run's end
        (``run_over`` stopped what else it had to say); the ends of its progress tasks are
        awaited after."""
        self.run_over()  # (done already when the run's end frame came)
        started_at = self._unsent_at if self.was_started else utcnow()
        await self._started_sent()
        await self._publish(
            "completed",
            self._id("completed"),
            outputs=outputs,
            gpu_seconds=gpu_seconds,
            started_at=started_at,
        )
        await self.stop_progress()

    async def failed(
        self,
        error: JobError,
        final: bool,
        gpu_seconds: float | None,
        retry_in_s: float | None = None,
    ) -> None:
        """The attempt failed; ``final=False`` when the job will be tried again, after
        ``retry_in_s``."""
        await self.stop_progress()
        self._start_again()
        await self._started_sent(must=False)
        await self._publish(
            "failed",
            self._id("failed"),
            error=error,
            final=final,
            gpu_seconds=gpu_seconds,
            retry_in_s=retry_in_s,
        )

    async def cancelled(self, reason: str, gpu_seconds: float | None) -> None:
        """The job was cancelled and its prompt stopped (a deleted prompt sends no frame)."""
        await self.stop_progress()
        self._start_again()
        await self._started_sent(must=False)
        await self._publish(
            "cancelled",
            self._id("cancelled"),
            error=JobError(code="cancelled", message=reason),
            gpu_seconds=gpu_seconds,
        )


def _observed(task: asyncio.Task[None]) -> None:
    """Retrieve a background publish's outcome (it is awaited again where it matters)."""
    if not task.cancelled():
        task.exception()
