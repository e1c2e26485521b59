"""Outputs: each file a run reported, streamed from ComfyUI's ``/view`` into S3.

Keys are deterministic, ``<output_prefix><n>.<ext>``, so a redelivered job overwrites what an
earlier attempt stored instead of adding to it. Bytes pass through in chunks (multipart upload on
the S3 side), so memory stays flat whatever the file's size; a :class:`MediaProbe` watches them
go by to report dimensions and duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

from blake3 import blake3

from comfyline.contracts import OutputKind, OutputRef, OutputSpec, RunJob
from comfyline.runtime import ObjectStore, cancel_and_wait

from .comfy_client import ComfyClient
from .media import CONTENT_TYPES, MediaProbe, content_type, extension
from .tracker import OutputFile

log = logging.getLogger(__name__)
CHUNK = 256 * 1024  # small: up to 8 chunks wait in the upload queue


def output_key(run_job: RunJob, index: int, filename: str) -> str:
    """Where output ``index`` of a job lives: ``outputs/<owner>/<job_id>/<n>.<ext>``."""
    return f"{run_job.output_prefix}{index}.{extension(filename)}"


def _kind(spec: OutputSpec | None, filename: str) -> OutputKind:
    known = CONTENT_TYPES.get(extension(filename))
    if spec is not None:
        return spec.kind
    return known[1] if known else OutputKind.IMAGE


async def store_output(
    client: ComfyClient,
    store: ObjectStore,
    run_job: RunJob,
    index: int,
    file: OutputFile,
    spec: OutputSpec | None,
) -> OutputRef:
    """Stream one file from ComfyUI into S3 and describe it."""
    key = output_key(run_job, index, file.filename)
    mime = content_type(file.filename)
    probe = MediaProbe(file.filename)
    hasher = blake3()
    async with client.view(file.filename, file.subfolder, file.type, CHUNK) as body:

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in body:
                probe.feed(chunk)
                hasher.update(chunk)
                yield chunk

        size = await store.put_stream(
            key,
            chunks(),
            mime,
            metadata={"job-id": run_job.job_id, "node-id": file.node_id},
        )
    info = probe.info()
    return OutputRef(
        index=index,
        key=key,
        kind=_kind(spec, file.filename),
        content_type=mime,
        size=size,
        width=info.width,
        height=info.height,
        duration_s=round(info.duration_s, 3) if info.duration_s is not None else None,
        node_id=file.node_id,
        filename=file.filename,
        hash=f"blake3:{hasher.hexdigest()}",
    )


class RunOutputs:
    """A run's outputs, stored as the run reports them: each file from the frame that names it
    once its place among the outputs is known (the nodes before it have reported), one file
    after the other (memory stays at one file's chunks), so the storing overlaps the rest of
    the run and ComfyUI's own ending of it.

    :meth:`stored` gives every file of the finished run stored, in order: a file stored early
    is kept when the run's final list has it at the same place; any other place is stored
    again (a node that reported twice; never seen from ComfyUI, handled all the same).
    :meth:`discard` ends what was started for a run that did not succeed and deletes what it
    stored: nothing refers to it.
    """

    def __init__(
        self,
        client: ComfyClient,
        store: ObjectStore,
        run_job: RunJob,
        specs: Sequence[OutputSpec],
    ) -> None:
        self.client = client
        self.store = store
        self.run_job = run_job
        self._by_node = {spec.node: spec for spec in specs}
        self._early: list[tuple[OutputFile, asyncio.Task[OutputRef]]] = []

    def reported(self, settled: Sequence[OutputFile]) -> None:
        """``settled`` files have their places: store those not started yet."""
        for index in range(len(self._early), len(settled)):
            file = settled[index]
            before = self._early[-1][1] if self._early else None
            task = asyncio.create_task(self._store_after(before, index, file))
            self._early.append((file, task))

    async def _store_after(
        self, before: asyncio.Task[OutputRef] | None, index: int, file: OutputFile
    ) -> OutputRef:
        if before is not None:
            await asyncio.wait([before])  # its end, whatever it was
        return await self._store(index, file)

    def _store(self, index: int, file: OutputFile) -> Coroutine[Any, Any, OutputRef]:
        spec = self._by_node.get(file.node_id)
        return store_output(self.client, self.store, self.run_job, index, file, spec)

    async def stored(self, files: Sequence[OutputFile]) -> list[OutputRef]:
        """Every file of the finished run stored, in order."""
        refs = []
        for index, file in enumerate(files):
            if index < len(self._early):
                early, task = self._early[index]
                if early == file:
                    refs.append(await task)
                    continue
                await asyncio.wait([task])  # done before its key is written again
                if extension(early.filename) != extension(file.filename):
                    await self._forget(index, early)  # the place's key changes with it
            refs.append(await self._store(index, file))
        await self._delete(len(files))
        return refs

    async def discard(self) -> None:
        """The run did not succeed: end the storing started and delete what it stored."""
        await self._delete(0)

    async def _delete(self, start: int) -> None:
        """End the storing of the places from ``start`` on and delete their keys (a PUT
        cancelled on its way may have landed all the same)."""
        early, self._early = self._early[start:], []
        await cancel_and_wait(task for _, task in early)
        for index, (file, _) in enumerate(early, start):
            await self._forget(index, file)

    async def _forget(self, index: int, file: OutputFile) -> None:
        with contextlib.suppress(Exception):
            await self.store.delete(output_key(self.run_job, index, file.filename))
