"""Outputs: each file a run reported, from ComfyUI's ``/view`` (or its output folder) into
storage.

Keys are deterministic, ``<output_prefix><n>.<ext>``, so a redelivered job overwrites what an
earlier attempt stored instead of adding to it. A small file is kept in JetStream's ``OUTPUTS``
stream, one publish, and copied to S3 beside the job's path by the workers' archiver (see
comfyline.runtime.fresh); a larger one passes through in chunks (multipart upload on the S3
side), so memory stays flat whatever the file's size. A :class:`MediaProbe` watches the bytes go
by to report dimensions and duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

from blake3 import blake3

from comfyline.contracts import OutputKind, OutputRef, OutputSpec, RunJob
from comfyline.runtime import FreshOutputs, ObjectStore, cancel_and_wait

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
    fresh: FreshOutputs | None = None,
) -> OutputRef:
    """Stream one file from ComfyUI into storage and describe it: a file of up to
    ``fresh.max_bytes`` is kept in JetStream (see comfyline.runtime.fresh; the archiver copies
    it to S3), any other streams into S3."""
    key = output_key(run_job, index, file.filename)
    mime = content_type(file.filename)
    probe = MediaProbe(file.filename)
    hasher = blake3()
    metadata = {"job-id": run_job.job_id, "node-id": file.node_id}
    limit = fresh.max_bytes if fresh is not None else -1
    fresh_until = None
    async with client.view(file.filename, file.subfolder, file.type, CHUNK) as body:
        chunks = aiter(body)
        head: list[bytes] = []
        held = 0
        async for chunk in chunks:
            probe.feed(chunk)
            hasher.update(chunk)
            head.append(chunk)
            held += len(chunk)
            if held > limit:
                break
        if held <= limit and fresh is not None:
            data = b"".join(head)
            fresh_until = await fresh.put(key, data, mime, metadata)
            if fresh_until is None:
                await store.put_bytes(key, data, mime, metadata)
            size = held
        else:

            async def rest() -> AsyncIterator[bytes]:
                for chunk in head:
                    yield chunk
                async for chunk in chunks:
                    probe.feed(chunk)
                    hasher.update(chunk)
                    yield chunk

            size = await store.put_stream(key, rest(), mime, metadata=metadata)
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
        fresh_until=fresh_until,
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
        fresh: FreshOutputs | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.fresh = fresh
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
        return store_output(self.client, self.store, self.run_job, index, file, spec, self.fresh)

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
        key = output_key(self.run_job, index, file.filename)
        with contextlib.suppress(Exception):
            if self.fresh is not None:
                await self.fresh.forget(key)
            await self.store.delete(key)
