"""A bounded queue with one reader, small enough to keep one per open event stream.

``asyncio.Queue`` holds four deques (its items, getters, putters and an event's waiters), about
3 KB even when empty; an idle event stream keeps one for its job events (and an admin's one
more for fleet events), and a gateway keeps thousands of idle streams open.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """``put_nowait`` (``asyncio.QueueFull`` past ``maxsize``), ``get`` and ``empty`` as
    ``asyncio.Queue``'s, for one reader at a time: its items are kept only once there are
    some, and a waiter only while the reader waits."""

    __slots__ = ("_items", "_maxsize", "_waiter")

    def __init__(self, maxsize: int) -> None:
        self._items: deque[T] | None = None
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        """Add ``item``; ``asyncio.QueueFull`` if ``maxsize`` items are waiting already."""
        if self._items is None:
            self._items = deque()
        if len(self._items) >= self._maxsize:
            raise asyncio.QueueFull
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        """The oldest item, waiting for one. A cancelled wait takes nothing."""
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None  # an idle stream keeps no deque
        return item

    def empty(self) -> bool:
        """Whether no item is waiting."""
        return not self._items
