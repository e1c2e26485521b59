"""Outputs: each file a run reported, streamed from ComfyUI's ``/view`` into S3.

Keys are deterministic, ``<output_prefix><n>.<ext>``, so a redelivered job overwrites what an
earlier attempt stored instead of adding to it. Bytes pass through in chunks (multipart upload on
the S3 side), so memory stays flat whatever the file's size; a :class:`MediaProbe` watches them
go by to report dimensions and duration.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from blake3 import blake3

from comfyline.contracts import OutputKind, OutputRef, OutputSpec, RunJob
from comfyline.runtime import ObjectStore

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


async def store_outputs(
    client: ComfyClient,
    store: ObjectStore,
    run_job: RunJob,
    files: Sequence[OutputFile],
    specs: Sequence[OutputSpec],
) -> list[OutputRef]:
    """Store every file of a run, one after the other (memory stays at one file's chunks)."""
    by_node = {spec.node: spec for spec in specs}
    refs = []
    for index, file in enumerate(files):
        refs.append(
            await store_output(client, store, run_job, index, file, by_node.get(file.node_id))
        )
    return refs
