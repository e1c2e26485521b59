"""The models the gateway serves: the built-in catalogue, overlaid by the ``models`` bucket.

The catalogue is data; whoever publishes it writes each template to the ``models`` bucket
(key ``<model>``, a ``ModelTemplate`` as JSON, or a JSON list of templates). The gateway re-reads
the bucket every ``models_refresh_s``, so a model added there is served without a redeploy.
A newer version in the bucket replaces the built-in one; a bucket that cannot be read leaves the
last good catalogue in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from pydantic import ValidationError

from comfyline.catalogue import Catalogue
from comfyline.contracts import ModelTemplate
from comfyline.runtime import Bus

from .kv import scan

log = logging.getLogger(__name__)


class ModelRegistry:
    """The current catalogue, refreshed in the background."""

    def __init__(self, bus: Bus, builtin: Catalogue, refresh_s: float) -> None:
        self.bus = bus
        self.builtin = builtin
        self.refresh_s = refresh_s
        self.catalogue = builtin
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the bucket once, then keep re-reading it."""
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="models-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    async def refresh(self) -> None:
        """Overlay the bucket's templates on the built-in ones."""
        try:
            kv = await self.bus.kv(self.bus.names.bucket("models"))
            entries = await scan(kv, ">")
        except Exception as exc:
            log.warning("cannot read the models bucket", extra={"error": str(exc)})
            return
        templates = {(t.name, t.version): t for t in self.builtin}
        for key, raw in entries:
            for template in _parse(key, raw):
                templates[(template.name, template.version)] = template
        self.catalogue = Catalogue(list(templates.values()))

    def get(self, name: str) -> ModelTemplate:
        """The latest version of a model (raises ``UnknownModel``)."""
        return self.catalogue.get(name)

    def all(self) -> list[ModelTemplate]:
        """Every model, by name."""
        return list(self.catalogue)


def _parse(key: str, raw: bytes) -> list[ModelTemplate]:
    try:
        data = json.loads(raw)
        items = data if isinstance(data, list) else [data]
        return [ModelTemplate.model_validate(item) for item in items]
    except (ValueError, ValidationError) as exc:
        log.warning("ignoring a bad template", extra={"key": key, "error": str(exc)[:200]})
        return []
