"""The `/history` store: finished prompts by prompt_id, oldest first, bounded like ComfyUI's."""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any

MAXIMUM_HISTORY_SIZE = 10000

HistoryEntry = dict[str, Any]


class History:
    """Thread-safe: the executor thread writes entries, HTTP handlers read and delete them."""

    def __init__(self, max_size: int = MAXIMUM_HISTORY_SIZE) -> None:
        self._entries: OrderedDict[str, HistoryEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._max_size = max_size

    def put(self, prompt_id: str, entry: HistoryEntry) -> None:
        """Store an entry; a re-used prompt_id overwrites the old one (as 0.3.64 does)."""
        with self._lock:
            if len(self._entries) > self._max_size:
                self._entries.popitem(last=False)
            self._entries[prompt_id] = entry

    def get(self, prompt_id: str) -> dict[str, HistoryEntry]:
        """`{prompt_id: entry}`, or `{}` for an unknown id."""
        with self._lock:
            if prompt_id in self._entries:
                return {prompt_id: copy.deepcopy(self._entries[prompt_id])}
            return {}

    def get_many(self, max_items: int | None = None, offset: int = -1) -> dict[str, HistoryEntry]:
        """All entries, or a window: `max_items` alone gives the newest ones, as ComfyUI does."""
        with self._lock:
            out: dict[str, HistoryEntry] = {}
            if offset < 0 and max_items is not None:
                offset = len(self._entries) - max_items
            for index, (key, entry) in enumerate(self._entries.items()):
                if index >= offset:
                    out[key] = copy.deepcopy(entry)
                    if max_items is not None and len(out) >= max_items:
                        break
            return out

    def delete(self, prompt_id: str) -> None:
        with self._lock:
            self._entries.pop(prompt_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def snapshot(self) -> dict[str, HistoryEntry]:
        """A shallow copy for read-only walks (the jobs API)."""
        with self._lock:
            return dict(self._entries)
