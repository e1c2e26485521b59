"""An aiohttp session per event loop, made on first use.

A service runs one loop for its life; tests run one per test, and a session may only be used on
the loop it was made on. Requests on a job's path use aiohttp: it spends a fraction of the CPU of
httpx on each request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp


class LoopSession:
    """The session of the running loop, made by ``make`` when there is none (or it closed)."""

    def __init__(self, make: Callable[[], aiohttp.ClientSession]) -> None:
        self._make = make
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> aiohttp.ClientSession:
        """The running loop's session."""
        session = self._session
        loop = asyncio.get_running_loop()
        if session is None or session.closed or self._loop is not loop:
            self._loop = loop
            session = self._session = self._make()
        return session

    async def close(self) -> None:
        """Close the session (its connections), if one was made."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
