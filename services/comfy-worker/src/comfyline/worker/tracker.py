"""One prompt's run, followed frame by frame: phase, progress, outputs, errors.

A pure state machine (no I/O), so the recorded real-ComfyUI transcripts can be replayed into it.
Outputs come from ``executed`` frames only (never from a racing ``/history``), ``temp`` files are
previews and are left out, and a cached run's ``executed`` frames (old file names) count like any
other. After a reconnect the history entry, once it has a status, may fill in what was missed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from comfyline.contracts import OutputSpec, Progress

from .frames import (
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Frame,
    Preview,
    ProgressState,
    ProgressStep,
)

FILE_KEYS = ("images", "gifs", "audio", "video")


class Phase(StrEnum):
    """Where the prompt is, as far as the frames tell."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self in {Phase.SUCCEEDED, Phase.FAILED, Phase.INTERRUPTED}


@dataclass(frozen=True, slots=True)
class OutputFile:
    """A file an output node reported: enough to fetch it from ``/view``."""

    node_id: str
    key: str
    filename: str
    subfolder: str
    type: str


@dataclass(slots=True)
class Update:
    """What one frame changed."""

    started: bool = False
    progressed: bool = False
    outputs: bool = False  # a node reported its files
    finished: bool = False
    done: bool = False
    preview: Preview | None = None


class RunTracker:
    """Follows the frames of one prompt (``prompt_id``) of ``graph``."""

    def __init__(self, prompt_id: str, graph: dict[str, dict[str, Any]]) -> None:
        self.prompt_id = prompt_id
        self.graph = graph
        self.phase = Phase.QUEUED
        self.done = False
        self.cached: set[str] = set()
        self.finished_nodes: set[str] = set()
        #: Nodes whose ``executed`` frame came (their files are in ``outputs``).
        self.reported: set[str] = set()
        self.current: str | None = None
        self.step: int | None = None
        self.steps: int | None = None
        self._fraction = 0.0
        self._percent = 0.0
        self.outputs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.error: dict[str, Any] | None = None
        self.interrupted: ExecutionInterrupted | None = None
        self.start_ts: int | None = None
        self.end_ts: int | None = None
        self._start_mono: float | None = None
        self._end_mono: float | None = None

    # --- frames ------------------------------------------------------------------------------
    def _ours(self, prompt_id: str | None) -> bool:
        return prompt_id is None or prompt_id == self.prompt_id

    def feed(self, frame: Frame) -> Update:
        """Apply one frame; frames of other prompts change nothing."""
        update = Update()
        prompt_id = getattr(frame, "prompt_id", None)
        if not self._ours(prompt_id):
            return update
        match frame:
            case ExecutionStart() if prompt_id:
                update.started = self._start(frame.timestamp)
            case ExecutionCached() if prompt_id:
                update.started = self._start(None)
                self.cached.update(n for n in frame.nodes if n in self.graph)
                update.progressed = True
            case Executing():
                if frame.node is None:
                    if prompt_id:  # the final marker (one without our id is a reconnect hint)
                        self.done = update.done = True
                else:
                    update.started = self._start(None)
                    if self.current and self.current != frame.node:
                        self.finished_nodes.add(self.current)
                    self.current, self.step, self.steps, self._fraction = frame.node, None, None, 0
                    update.progressed = True
            case ProgressStep() if prompt_id:
                self.current = frame.node or self.current
                self.step, self.steps = int(frame.value), int(frame.max)
                self._fraction = min(1.0, frame.value / frame.max) if frame.max else 0.0
                update.progressed = True
            case ProgressState() if prompt_id:
                for node_id, state in frame.nodes.items():
                    if state.state == "finished":
                        self.finished_nodes.add(node_id)
                    elif state.state == "running" and node_id == self.current and state.max > 1:
                        self._fraction = max(self._fraction, min(1.0, state.value / state.max))
                update.progressed = True
            case Executed() if prompt_id and frame.node:
                self._add_outputs(frame.node, frame.output)
                self.finished_nodes.add(frame.node)
                self.reported.add(frame.node)
                update.progressed = update.outputs = True
            case ExecutionSuccess() if prompt_id:
                update.finished = self._end(Phase.SUCCEEDED, frame.timestamp)
            case ExecutionError() if prompt_id:
                self.error = frame.data
                update.finished = self._end(Phase.FAILED, frame.timestamp)
            case ExecutionInterrupted() if prompt_id:
                self.interrupted = frame
                update.finished = self._end(Phase.INTERRUPTED, frame.timestamp)
            case Preview():
                if self.phase == Phase.RUNNING:
                    update.preview = frame
        return update

    def _start(self, timestamp: int | None) -> bool:
        if timestamp is not None and self.start_ts is None:
            self.start_ts = timestamp
        if self.phase != Phase.QUEUED:
            return False
        self.phase = Phase.RUNNING
        self._start_mono = time.monotonic()
        return True

    def _end(self, phase: Phase, timestamp: int | None) -> bool:
        if self.phase.finished:
            return False
        self._start(None)
        self.phase = phase
        self.end_ts = timestamp
        self._end_mono = time.monotonic()
        if phase == Phase.SUCCEEDED and self.current:
            self.finished_nodes.add(self.current)
        return True

    def _add_outputs(self, node_id: str, ui: dict[str, Any]) -> None:
        slot = self.outputs.setdefault(node_id, {})
        for key, entries in ui.items():
            if isinstance(entries, list):
                files = [e for e in entries if isinstance(e, dict) and e.get("filename")]
                if files:
                    slot[key] = files

    # --- catching up after a reconnect ---------------------------------------------------------
    def merge_history(self, entry: dict[str, Any]) -> None:
        """Take what a finished prompt's history entry says that the frames did not."""
        for node_id, ui in (entry.get("outputs") or {}).items():
            if isinstance(ui, dict) and str(node_id) not in self.outputs:
                self._add_outputs(str(node_id), ui)
        status = entry.get("status") or {}
        stamps: dict[str, int | None] = {}
        error: dict[str, Any] | None = None
        interrupted: dict[str, Any] | None = None
        for message in status.get("messages") or []:
            if not (isinstance(message, list) and len(message) == 2):
                continue
            kind, data = message
            data = data if isinstance(data, dict) else {}
            stamps[str(kind)] = data.get("timestamp")
            if kind == "execution_error":
                error = data
            elif kind == "execution_interrupted":
                interrupted = data
        if self.start_ts is None and isinstance(stamps.get("execution_start"), int):
            self.start_ts = stamps["execution_start"]
        if self.phase.finished:
            return
        if error is not None:
            self.error = error
            self._end(Phase.FAILED, error.get("timestamp"))
        elif interrupted is not None:
            self.interrupted = ExecutionInterrupted(
                self.prompt_id,
                str(interrupted.get("node_id") or "") or None,
                interrupted.get("node_type"),
                interrupted.get("timestamp"),
            )
            self._end(Phase.INTERRUPTED, interrupted.get("timestamp"))
        elif status.get("status_str") == "success" or status.get("completed"):
            self._end(Phase.SUCCEEDED, stamps.get("execution_success"))
        self.done = True

    # --- what the worker reports -------------------------------------------------------------
    def progress(self) -> Progress:
        """Overall percent (never going back), the current node and its step."""
        total = max(1, len(set(self.graph) - self.cached))
        done = len((self.finished_nodes & set(self.graph)) - self.cached)
        if self.phase == Phase.SUCCEEDED:
            percent = 100.0
        else:
            fraction = 0.0 if (self.current in self.finished_nodes) else self._fraction
            percent = min(99.0, 100.0 * (min(done, total) + fraction) / total)
        self._percent = max(self._percent, percent)
        node = self.graph.get(self.current or "", {})
        return Progress(
            percent=round(self._percent, 1),
            node_id=self.current,
            node_type=node.get("class_type"),
            step=self.step,
            steps=self.steps,
            nodes_done=min(done, total),
            nodes_total=total,
        )

    @property
    def gpu_seconds(self) -> float:
        """Execution time: ComfyUI's own timestamps when both are known, else our clock."""
        if self.start_ts is not None and self.end_ts is not None and self.end_ts >= self.start_ts:
            return (self.end_ts - self.start_ts) / 1000.0
        if self._start_mono is not None and self._end_mono is not None:
            return max(0.0, self._end_mono - self._start_mono)
        return 0.0

    @property
    def fully_cached(self) -> bool:
        """True when ComfyUI took every node from its cache."""
        return bool(self.graph) and set(self.graph) <= self.cached

    def settled(self, specs: Sequence[OutputSpec]) -> list[OutputFile]:
        """The first result files whose places are known while the run goes on: those of the
        wanted nodes, in order, up to the first node that has not reported its files yet (a
        node reports them all in one frame). ``files(specs)`` starts with them unless a node
        reports again."""
        reported = []
        for spec in specs:
            if spec.node not in self.reported:
                break
            reported.append(spec)
        return self.files(reported)

    def files(self, specs: Iterable[OutputSpec] | None = None) -> list[OutputFile]:
        """The result files, in the order of ``specs`` (node, key), ``temp`` files left out."""
        wanted: Sequence[tuple[str, Sequence[str]]]
        if specs is None:
            wanted = [(node_id, FILE_KEYS) for node_id in self.outputs]
        else:
            wanted = [
                (spec.node, (spec.key, *(k for k in FILE_KEYS if k != spec.key))) for spec in specs
            ]
        found: list[OutputFile] = []
        for node_id, keys in wanted:
            ui = self.outputs.get(node_id, {})
            for key in keys:
                entries = [e for e in ui.get(key, []) if e.get("type", "output") == "output"]
                found.extend(
                    OutputFile(
                        node_id, key, str(e["filename"]), str(e.get("subfolder") or ""), "output"
                    )
                    for e in entries
                )
                if entries:
                    break
        return found
