"""Job inputs that are files: found in S3, streamed into ComfyUI's ``input/`` folder.

A reference names an upload (``"ast_..."`` -> ``inputs/<owner>/<asset_id>.<ext>``) or an output
of an earlier job of the same owner (``{"job", "output"}`` -> that job's record in the ``jobs``
KV, ``outputs[n].key``). Each file goes to ComfyUI under a deterministic name
(``<asset_id>.<ext>`` or ``<job_id>-<n>.<ext>`` in the upload subfolder, ``overwrite=true``), so
a redelivered job uploads the same name again instead of piling up copies. A built-in reference
voice (``"amber"``) is read from the catalogue package instead of S3. A workflow job's files are
the ``core/ASSET`` references in its graph (``graph_assets``), each an upload of the job's owner,
staged the same way and named by ``<node_id>.<input>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyline.catalogue import (
    AssetRef,
    BuiltinVoice,
    JobOutputRef,
    asset_params,
    graph_assets,
    parse_asset_ref,
)
from comfyline.catalogue import InputInvalid as _InputInvalid
from comfyline.contracts import ErrorCode, JobRecord, JobState, ModelTemplate, Names, RunJob
from comfyline.runtime import Bus, FreshOutputs, ObjectNotFound, ObjectStore, StorageError

from .comfy_client import ComfyClient
from .errors import InputError
from .media import content_type, extension

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InputFile:
    """A job input found in S3, and the name it gets in ComfyUI."""

    param: str
    key: str
    size: int
    content_type: str
    upload_name: str
    local: Path | None = None  # a file shipped with Comfyline, not an object in S3


class InputResolver:
    """Finds the files a job's input refers to, checking that they belong to its owner."""

    def __init__(self, bus: Bus, store: ObjectStore) -> None:
        self.bus = bus
        self.names: Names = bus.names
        self.store = store

    async def resolve(
        self, run_job: RunJob, template: ModelTemplate, data: dict[str, Any]
    ) -> list[InputFile]:
        """Every asset parameter of ``template`` present in ``data``, as an :class:`InputFile`."""
        files = []
        if template.kind == "workflow":
            try:
                refs = graph_assets(data.get("workflow"))
            except _InputInvalid as exc:
                raise InputError(exc.message, code=ErrorCode.VALIDATION_ERROR) from exc
            for found in refs:
                asset = AssetRef(found.asset_id)
                files.append(await self._asset(run_job.owner, found.param, asset))
        for param in dict.fromkeys(asset_params(template)):
            if data.get(param) is None:
                continue
            try:
                ref = parse_asset_ref(data[param])
            except _InputInvalid as exc:
                raise InputError(
                    f"{param}: {exc.message}", code=ErrorCode.VALIDATION_ERROR
                ) from exc
            if isinstance(ref, BuiltinVoice):
                files.append(builtin(param, ref))
            elif isinstance(ref, AssetRef):
                files.append(await self._asset(run_job.owner, param, ref))
            else:
                files.append(await self._job_output(run_job.owner, param, ref))
        return files

    async def _asset(self, owner: str, param: str, ref: AssetRef) -> InputFile:
        prefix = f"inputs/{owner}/{ref.asset_id}"

        def find() -> list[tuple[str, int]]:
            objects = self.store.client.list_objects(self.store.bucket, prefix=prefix)
            return [(o.object_name or "", int(o.size or 0)) for o in objects]

        try:
            found = await asyncio.to_thread(find)
        except Exception as exc:  # minio raises S3Error and urllib3 errors from the iterator
            raise StorageError(f"cannot list {prefix}: {exc}") from exc
        matches = [(k, s) for k, s in found if k == prefix or k.startswith(prefix + ".")]
        if not matches:
            raise InputError(f"{param}: no asset {ref.asset_id} of this owner")
        key, size = matches[0]
        info = await self.store.stat(key)
        name = f"{ref.asset_id}.{extension(key)}"
        return InputFile(param, key, size, _mime(info.content_type, key), name)

    async def _job_output(self, owner: str, param: str, ref: JobOutputRef) -> InputFile:
        kv = await self.bus.kv(self.names.bucket("jobs"))
        try:
            entry = await kv.get(ref.job_id)
        except Exception as exc:
            if type(exc).__name__ in {"KeyNotFoundError", "KeyDeletedError"}:
                raise InputError(f"{param}: no job {ref.job_id}") from exc
            raise
        record = JobRecord.from_bytes(entry.value or b"{}")
        if record.owner != owner:
            raise InputError(f"{param}: no job {ref.job_id}")  # never say it exists
        if record.status != JobState.SUCCEEDED:
            raise InputError(f"{param}: job {ref.job_id} has not succeeded ({record.status})")
        outputs = {o.index: o for o in record.outputs}
        if ref.output not in outputs:
            raise InputError(f"{param}: job {ref.job_id} has no output {ref.output}")
        out = outputs[ref.output]
        name = f"{ref.job_id}-{ref.output}.{extension(out.key)}"
        return InputFile(param, out.key, out.size, out.content_type, name)


def builtin(param: str, voice: BuiltinVoice) -> InputFile:
    """A built-in voice as an input file (the same name in ComfyUI every time)."""
    path = voice.path
    name = f"comfyline-voice-{voice.name}{path.suffix}"
    return InputFile(
        param, f"builtin:{path.name}", path.stat().st_size, content_type(path.name), name, path
    )


async def _read(path: Path) -> AsyncIterator[bytes]:
    yield await asyncio.to_thread(path.read_bytes)


def _mime(stored: str, key: str) -> str:
    return stored if stored and stored != "application/octet-stream" else content_type(key)


async def _object(store: ObjectStore, fresh: FreshOutputs | None, key: str) -> AsyncIterator[bytes]:
    """An object's bytes: an earlier job's output from JetStream while it is fresh (S3 may
    not have it yet), anything else from S3."""
    found = await fresh.get(key) if fresh is not None and key.startswith("outputs/") else None
    if found is not None:
        yield found.data
        return
    async for chunk in store.iter_object(key):
        yield chunk


async def upload_inputs(
    client: ComfyClient,
    store: ObjectStore,
    files: list[InputFile],
    subfolder: str,
    fresh: FreshOutputs | None = None,
) -> dict[str, str]:
    """Stream each file from storage into ComfyUI; parameter -> the name a loader node
    takes."""
    names: dict[str, str] = {}
    for file in files:
        try:
            names[file.param] = await client.upload(
                file.upload_name,
                _read(file.local) if file.local else _object(store, fresh, file.key),
                size=file.size,
                content_type=file.content_type,
                subfolder=subfolder,
            )
        except ObjectNotFound as exc:
            raise InputError(f"{file.param}: {file.key} is gone from storage") from exc
    return names
