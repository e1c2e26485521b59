"""One prompt on one ComfyUI server, from ``POST /prompt`` to its last frame.

The socket is open before the prompt is posted (usually the server's socket, kept open across
runs), and the ids are ours (the socket's ``clientId`` and a fresh ``prompt_id``, so cancelling
needs nothing from ComfyUI's answer). ``node_errors`` are
checked even on 200. Frames drive a :class:`RunTracker`; silence longer than the watchdog, or a
reconnect, is caught up over HTTP (``/history`` only once it has a status, then ``/queue``).
Cancellation interrupts a running prompt or deletes a pending one, and resolves the deleted case
itself, since ComfyUI sends no frame for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from comfyline.contracts import ErrorCode, OutputSpec, Progress
from comfyline.runtime import RunMark, cancel_and_wait

from .comfy_client import ComfyClient
from .comfy_socket import (
    ComfySocket,
    Frames,
    Reconnected,
    Resolved,
    ServerSocket,
    SocketDead,
    SocketLost,
)
from .errors import (
    ComfyUnavailable,
    RunCancelled,
    RunInterrupted,
    RunWithdrawn,
    WorkerError,
    execution_failure,
    rejection,
)
from .frames import Preview
from .tracker import OutputFile, Phase, RunTracker

log = logging.getLogger(__name__)
DONE_GRACE_S = 2.0
#: How long a prompt of a job without a deadline of its own may wait in ComfyUI's queue (behind
#: at most ``pipeline_depth - 1`` others, each bounded by its own run deadline).
QUEUE_LIMIT_S = 3600.0
T = TypeVar("T")


class RunListener(Protocol):
    """Who hears about a run as it goes (the job's reporter)."""

    async def started(self, prompt_id: str) -> None: ...

    def progress(self, progress: Progress) -> None: ...

    def preview(self, preview: Preview) -> None: ...

    def run_over(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished run: its files (not yet fetched), execution time and whether all was cached."""

    prompt_id: str
    files: list[OutputFile]
    gpu_seconds: float
    cached: bool


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Timing of a run (from the worker's settings and the job's deadline)."""

    deadline_s: float = 300.0  # executing, counted from the prompt's start
    queue_limit_s: float | None = None  # the job's own time left, waiting included (None: none)
    watchdog_s: float = 10.0
    connect_timeout_s: float = 5.0
    reconnect_budget_s: float = 5.0
    previews: bool = False


class ComfyRun:
    """Run ``graph`` on ``client``'s server and return its output files."""

    def __init__(
        self,
        client: ComfyClient,
        graph: dict[str, dict[str, Any]],
        outputs: Sequence[OutputSpec],
        listener: RunListener,
        options: RunOptions,
        extra_data: dict[str, Any] | None = None,
        shared: ServerSocket | None = None,
        settled: Callable[[list[OutputFile]], None] | None = None,
        mark: RunMark | None = None,
    ) -> None:
        self.client = client
        self.extra_data = extra_data
        self.graph = graph
        self.outputs = outputs
        self.listener = listener
        self.options = options
        self.prompt_id = str(uuid.uuid4())
        self.shared = shared  # the server's socket (None: the run opens one of its own)
        #: Told of the files whose places among the outputs are known, as nodes report them.
        self.settled = settled
        #: Entered once the prompt is posted, left at its first output or its end (the
        #: archiver copies other jobs' outputs meanwhile).
        self.mark = mark
        self.client_id = str(uuid.uuid4())
        self.tracker = RunTracker(self.prompt_id, graph)
        self.cancel_requested = False
        self.withdrawn = False
        self._posted = False
        self._socket: Frames | None = None

    async def execute(
        self,
        keep: Callable[[RunResult], Coroutine[Any, Any, T]],
        free: Callable[[], None] = lambda: None,
    ) -> tuple[RunResult, T]:
        """Post the prompt and follow it to its end frame; raises a :class:`WorkerError` on
        failure. Then ``keep`` the result (store its outputs) while ComfyUI finishes with the
        prompt: ``free`` is called once its done marker came.
        Returns the result and what ``keep`` returned.
        """
        frames: contextlib.AbstractAsyncContextManager[Frames]
        if self.shared is not None:
            frames = self.shared.follow(self.prompt_id)
        else:
            frames = ComfySocket(
                self.client,
                self.client_id,
                connect_timeout_s=self.options.connect_timeout_s,
                reconnect_budget_s=self.options.reconnect_budget_s,
                previews=self.options.previews,
            )
        async with frames as socket:
            self.client_id = socket.client_id
            self._socket = socket
            if self.mark is not None:
                self.mark.enter()
            try:
                result = await self._drive(socket)
            except asyncio.CancelledError:
                # The worker is giving the job back: free the GPU for whoever runs it next.
                if self._posted and not self.tracker.phase.finished:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._stop_prompt(), 3.0)
                raise
            finally:
                if self.mark is not None:
                    self.mark.leave()
            self.listener.run_over()
            kept: asyncio.Task[T] = asyncio.create_task(keep(result), name=f"keep {self.prompt_id}")
            try:
                await self._await_done_marker(socket)
            except BaseException:
                await cancel_and_wait([kept])
                raise
            free()
        return result, await kept

    async def _drive(self, socket: Frames) -> RunResult:
        if self.cancel_requested:
            raise RunCancelled("cancelled before the prompt was posted")
        answer = await self.client.post_prompt(
            self.graph, self.client_id, self.prompt_id, self.extra_data
        )
        self._posted = True
        if answer.get("node_errors"):
            # Only the valid branches would run: take the prompt back and refuse the job.
            await self._stop_prompt(resolve=False)
            raise rejection(answer, self.graph)
        if self.cancel_requested:
            await self._stop_prompt()
        limit = self.options.queue_limit_s
        deadline = time.monotonic() + (QUEUE_LIMIT_S if limit is None else limit)
        while not self.tracker.phase.finished:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with contextlib.suppress(WorkerError):
                    await self._stop_prompt(resolve=False)
                waited = self.tracker.phase == Phase.QUEUED
                raise WorkerError(
                    "the job's deadline passed while it waited in ComfyUI's queue"
                    if waited
                    else f"ComfyUI run exceeded its {self.options.deadline_s:.0f}s deadline",
                    code=ErrorCode.DEADLINE_EXCEEDED,
                    transient=False,
                )
            event = await socket.next_event(min(self.options.watchdog_s, remaining))
            match event:
                case None | Reconnected():
                    await self._catch_up()
                case SocketLost():
                    continue
                case SocketDead():
                    raise ComfyUnavailable(f"lost the socket of {self.client.base_url}")
                case Resolved():
                    raise self._taken_back()
                case _:
                    update = self.tracker.feed(event)
                    if update.started:
                        deadline = self._run_deadline(deadline)
                        await self.listener.started(self.prompt_id)
                    if update.outputs and self.mark is not None:
                        self.mark.leave()  # (before its outputs are kept: see the archiver)
                    if update.outputs and self.settled is not None:
                        self.settled(self.tracker.settled(self.outputs))
                    if update.progressed:
                        self.listener.progress(self.tracker.progress())
                    if update.preview is not None:
                        self.listener.preview(update.preview)
        return self._result()

    def _run_deadline(self, queue_deadline: float) -> float:
        """Once the prompt starts, its run has ``deadline_s``, within the job's own limit."""
        run_deadline = time.monotonic() + self.options.deadline_s
        if self.options.queue_limit_s is None:
            return run_deadline
        return min(run_deadline, queue_deadline)

    async def _await_done_marker(self, socket: Frames) -> None:
        """Wait briefly for ``executing {node: null}`` after the end frame.

        ComfyUI sends the end frame, then writes the history entry and frees its queue, then
        sends the marker: only then is the server truly free for the next prompt.
        """
        deadline = time.monotonic() + DONE_GRACE_S
        while not self.tracker.done:
            left = deadline - time.monotonic()
            event = await socket.next_event(left) if left > 0 else None
            if event is None or isinstance(event, Reconnected | SocketDead | Resolved):
                return
            if not isinstance(event, SocketLost):
                self.tracker.feed(event)

    def _result(self) -> RunResult:
        tracker = self.tracker
        if tracker.phase == Phase.FAILED:
            raise execution_failure(tracker.error or {})
        if tracker.phase == Phase.INTERRUPTED:
            if self.cancel_requested:
                raise RunCancelled("cancelled while running; the prompt was interrupted")
            node = tracker.interrupted
            raise RunInterrupted(
                "ComfyUI interrupted the prompt",
                node_id=node.node_id if node else None,
                node_type=node.node_type if node else None,
            )
        return RunResult(
            prompt_id=self.prompt_id,
            files=tracker.files(self.outputs),
            gpu_seconds=tracker.gpu_seconds,
            cached=tracker.fully_cached,
        )

    async def _catch_up(self) -> None:
        """After silence or a reconnect: learn over HTTP whether the prompt is still going."""
        for attempt in range(6):
            entry = await self.client.history(self.prompt_id)
            if entry is not None:
                self.tracker.merge_history(entry)
                return
            running, pending = await self.client.queue()
            if self.prompt_id in running or self.prompt_id in pending:
                return
            if (self.withdrawn or self.cancel_requested) and self.tracker.phase == Phase.QUEUED:
                raise self._taken_back()
            if attempt < 5:
                # finished a moment ago: its history entry is written just after the last frame
                await asyncio.sleep(0.2)
        raise ComfyUnavailable(f"prompt {self.prompt_id} vanished from {self.client.base_url}")

    async def cancel(self) -> None:
        """Stop this run: interrupt it if running, delete it if pending (then resolve it)."""
        self.cancel_requested = True
        if self._posted and not self.tracker.phase.finished:
            await self._stop_prompt()

    def _taken_back(self) -> WorkerError:
        """How a prompt deleted while pending ends: moved elsewhere, or cancelled."""
        if self.withdrawn:
            return RunWithdrawn("taken back before it started, to run elsewhere")
        return RunCancelled("cancelled while pending; the prompt was deleted")

    @property
    def waiting(self) -> bool:
        """Posted, and still waiting in the server's queue (not started, not cancelled)."""
        return (
            self._posted
            and not self.cancel_requested
            and not self.withdrawn
            and self.tracker.phase == Phase.QUEUED
        )

    async def withdraw(self) -> bool:
        """Take the prompt back from the server's queue if it has not started: True when it is
        gone without having run (the run then ends with :class:`RunWithdrawn`), False when it
        started (or even ended) meanwhile, and goes on here as if nothing was asked."""
        if not self.waiting or self._socket is None:
            return False
        await self.client.delete_pending([self.prompt_id])
        running, pending = await self.client.queue()
        if self.prompt_id in running or self.prompt_id in pending or not self.waiting:
            return False  # it started between the delete and the look: it runs here
        if await self.client.history(self.prompt_id) is not None:
            return False  # it started and ended in between: its frames finish the run
        self.withdrawn = True
        self._socket.notify(Resolved("withdrawn"))
        return True

    async def _stop_prompt(self, resolve: bool = True) -> None:
        if self.tracker.phase == Phase.RUNNING:
            await self.client.interrupt(self.prompt_id)
            return
        await self.client.delete_pending([self.prompt_id])
        await self.client.interrupt(self.prompt_id)
        running, pending = await self.client.queue()
        if self.prompt_id in running:
            # it started between our two calls: interrupt again now that it runs
            await self.client.interrupt(self.prompt_id)
        elif self.prompt_id in pending:
            await self.client.delete_pending([self.prompt_id])
        elif resolve and self.tracker.phase == Phase.QUEUED and self._socket is not None:
            self._socket.notify(Resolved("deleted"))
