"""The prompt queue: pending prompts in a heap by `number`, the running one, and the history.

Like ComfyUI's `PromptQueue`, every change (put, get, done, delete, wipe) broadcasts a `status`
frame through `on_change`, so `queue_remaining` counts pending + running prompts.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from comfyline.comfyui_sim.history import History, HistoryEntry


@dataclass(order=True)
class QueueItem:
    """One accepted prompt: `[number, prompt_id, graph, extra_data, outputs]` on the wire."""

    number: float
    seq: int
    prompt_id: str = field(compare=False)
    prompt: dict[str, Any] = field(compare=False)
    extra_data: dict[str, Any] = field(compare=False)
    outputs: list[str] = field(compare=False)
    taken: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)
    #: Simulator-only: when the prompt was accepted (epoch seconds, ``GET /sim/executions``).
    queued_at: float = field(default_factory=time.time, compare=False, repr=False)

    def wire(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    @property
    def client_id(self) -> str | None:
        value = self.extra_data.get("client_id")
        return value if isinstance(value, str) else None


class PromptQueue:
    """Thread-safe queue shared by the HTTP handlers and the single executor thread."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._lock = threading.RLock()
        self._not_empty = threading.Condition(self._lock)
        self._heap: list[QueueItem] = []
        self._running: dict[int, QueueItem] = {}
        self._task_counter = 0
        self._seq = itertools.count()
        self._closed = False
        self.history = History()

    def make_item(
        self,
        number: float,
        prompt_id: str,
        prompt: dict[str, Any],
        extra_data: dict[str, Any],
        outputs: list[str],
    ) -> QueueItem:
        return QueueItem(number, next(self._seq), prompt_id, prompt, extra_data, outputs)

    def put(self, item: QueueItem) -> bool:
        """Queue a prompt; True when the queue was idle (the executor will take it at once)."""
        with self._lock:
            idle = not self._heap and not self._running
            heapq.heappush(self._heap, item)
            self._on_change()
            self._not_empty.notify()
            return idle

    def get(self, timeout: float) -> tuple[QueueItem, int] | None:
        """Block until a prompt is pending; None on timeout or once closed."""
        with self._not_empty:
            if not self._heap and not self._closed:
                self._not_empty.wait(timeout)
            if not self._heap or self._closed:
                return None
            item = heapq.heappop(self._heap)
            task_id = self._task_counter
            self._running[task_id] = item
            self._task_counter += 1
            self._on_change()
            item.taken.set()
            return item, task_id

    def task_done(self, task_id: int, entry: HistoryEntry) -> None:
        """Write the history entry of a finished prompt; only now does `/history` show it."""
        with self._lock:
            item = self._running.pop(task_id)
            self.history.put(item.prompt_id, entry)
            self._on_change()

    def remaining(self) -> int:
        with self._lock:
            return len(self._heap) + len(self._running)

    def running(self) -> list[QueueItem]:
        with self._lock:
            return list(self._running.values())

    def pending(self) -> list[QueueItem]:
        with self._lock:
            return list(self._heap)

    def is_running(self, prompt_id: str) -> bool:
        with self._lock:
            return any(item.prompt_id == prompt_id for item in self._running.values())

    def wipe(self) -> None:
        with self._lock:
            self._heap = []
            self._on_change()

    def delete(self, prompt_id: object) -> bool:
        """Remove one pending prompt; the running one is never touched."""
        with self._lock:
            for index, item in enumerate(self._heap):
                if item.prompt_id == prompt_id:
                    if len(self._heap) == 1:
                        self.wipe()
                    else:
                        self._heap.pop(index)
                        heapq.heapify(self._heap)
                    self._on_change()
                    return True
            return False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
