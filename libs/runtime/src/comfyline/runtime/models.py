"""The catalogue as every service sees it: the built-in templates overlaid by the ``models`` bucket.

Whoever publishes the catalogue writes each template to the ``models`` bucket (key ``<model>``,
a ``ModelTemplate`` as JSON, or a JSON list of templates). A :class:`LiveCatalogue` re-reads the
bucket every ``refresh_s``, so a model published there is served, dispatched and run without a
redeploy. A template in the bucket replaces the built-in one of the same name and version; a
bucket that cannot be read leaves the last good catalogue in place.
"""

from __future__ import annotations

import asyncio
import json
import logging
from types import TracebackType
from typing import Self

from pydantic import ValidationError

from comfyline.catalogue import Catalogue
from comfyline.contracts import ModelTemplate

from .bus import Bus, BusError
from .kv import scan
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)


class LiveCatalogue(Catalogue):
    """A :class:`Catalogue` kept up to date from the ``models`` bucket in the background."""

    def __init__(self, bus: Bus, base: Catalogue, refresh_s: float = 10.0) -> None:
        super().__init__(base.templates())
        self.bus = bus
        self.base = base
        self.refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None
        self._seen: list[tuple[str, bytes]] | None = None  # the bucket as last applied

    async def start(self) -> None:
        """Read the bucket once, then keep re-reading it."""
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="models-refresh")

    async def stop(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    async def refresh(self) -> None:
        """Overlay the bucket's templates on the built-in ones."""
        try:
            kv = await self.bus.kv(self.bus.names.bucket("models"))
            entries = await scan(kv, ">")
        except (BusError, Exception) as exc:
            log.warning("cannot read the models bucket", extra={"error": str(exc)})
            return
        entries = sorted(entries)
        if entries == self._seen:
            return  # unchanged: no templates to parse and validate again
        templates = {(t.name, t.version): t for t in self.base.templates()}
        for key, raw in entries:
            for template in _parse(key, raw):
                templates[(template.name, template.version)] = template
        self._reset(list(templates.values()))
        self._seen = entries


def _parse(key: str, raw: bytes) -> list[ModelTemplate]:
    try:
        data = json.loads(raw)
        items = data if isinstance(data, list) else [data]
        return [ModelTemplate.model_validate(item) for item in items]
    except (ValueError, ValidationError) as exc:
        log.warning("ignoring a bad template", extra={"key": key, "error": str(exc)[:200]})
        return []
