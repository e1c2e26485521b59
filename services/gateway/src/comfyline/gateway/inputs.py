"""Asset references in a job's input: check they are the caller's, fetch https URLs.

A template's asset parameters (bindings with ``transform: asset``) take an uploaded asset id
(``ast_...``), an earlier job's output (``{"job": "job_...", "output": n}``, ``output``
defaulting to 0), or an https URL,
which the gateway fetches through the SSRF guard and stores as a new asset, so workers only ever
read our own bucket. A parameter's ``x-asset-kinds`` (image, audio, video) is checked against
the file named. The input is then validated against the template's schema as it stands. A
workflow names its files with the Comfy API v2's ``core/ASSET`` references, each of which must be
an upload of the caller's.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from comfyline.catalogue import InputInvalid, graph_assets
from comfyline.contracts import ErrorCode, JobState, ModelTemplate, new_asset_id
from comfyline.runtime import ObjectStore

from .auth import Principal
from .errors import ApiError
from .joblog import JobLog
from .media import SNIFF_BYTES, check
from .objects import ASSET_ID, find_upload, upload_key
from .ssrf import Fetcher, body_chunks

JOB_ID = re.compile(r"^job_[0-9a-z]{26}$")


def asset_params(template: ModelTemplate) -> set[str]:
    """The parameters of ``template`` that name an asset."""
    return {b.param for b in template.bindings if b.transform == "asset"}


def _missing(field: str, message: str) -> ApiError:
    return ApiError(
        422,
        ErrorCode.ASSET_NOT_FOUND,
        f"{field}: {message}",
        details={"errors": [{"field": field, "message": message}]},
    )


class InputResolver:
    """Checks and completes the asset references of one job input."""

    def __init__(
        self, store: ObjectStore, jobs: JobLog, fetcher: Fetcher, max_fetch_bytes: int
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.fetcher = fetcher
        self.max_fetch_bytes = max_fetch_bytes

    async def resolve(
        self, template: ModelTemplate, principal: Principal, raw: dict[str, Any]
    ) -> dict[str, Any]:
        """``raw`` with fetched URLs replaced by asset ids; every reference checked."""
        data = dict(raw)
        properties = template.parameters.get("properties", {})
        for param in sorted(asset_params(template) & set(data)):
            spec = properties.get(param)
            kinds = spec.get("x-asset-kinds") if isinstance(spec, dict) else None
            value, kind = await self._one(param, data[param], principal)
            if kind and isinstance(kinds, list) and kinds and kind not in kinds:
                raise ApiError(
                    422,
                    ErrorCode.VALIDATION_ERROR,
                    f"{param}: expects {' or '.join(kinds)}, not {kind}",
                    details={"errors": [{"field": param, "message": f"expects {kinds}"}]},
                )
            data[param] = value
        return data

    async def _one(self, field: str, value: Any, principal: Principal) -> tuple[Any, str | None]:
        """The value to keep and the kind of file it names (None: left to the schema)."""
        if isinstance(value, str) and "://" in value:
            asset_id, kind = await self.fetch(value, principal, field)
            return asset_id, kind
        if isinstance(value, str) and value.startswith("ast_"):
            found = (
                await find_upload(self.store, principal.owner, value)
                if ASSET_ID.match(value)
                else None
            )
            if found is None:
                raise _missing(field, f"no asset {value!r}")
            return value, found.content_type.split("/", 1)[0]
        if isinstance(value, dict) and "job" in value and set(value) <= {"job", "output"}:
            job_id, index = value["job"], value.get("output", 0)
            record = (
                await self.jobs.find(job_id)
                if isinstance(job_id, str) and JOB_ID.match(job_id)
                else None
            )
            if record is None or not principal.may_see(record.owner):
                raise _missing(field, f"no job {job_id!r}")
            if record.status is not JobState.SUCCEEDED:
                raise _missing(field, f"job {job_id} has not succeeded")
            output = next((o for o in record.outputs if o.index == index), None)
            if output is None or isinstance(index, bool):
                raise _missing(field, f"job {job_id} has no output {index!r}")
            return value, output.kind.value
        return value, None  # the schema decides whether anything else is acceptable

    async def workflow_files(self, principal: Principal, graph: Any) -> dict[str, str]:
        """The file each ``core/ASSET`` reference of a workflow stands for while the graph is
        checked (``<asset_id>.<ext>``, by ``<node_id>.<input>``); 422 ``asset_not_found`` for a
        reference that is malformed or names no upload of the caller's."""
        try:
            refs = graph_assets(graph)
        except InputInvalid as exc:
            raise ApiError(
                422, ErrorCode.ASSET_NOT_FOUND, exc.message, details=exc.details
            ) from exc
        names: dict[str, str] = {}
        for ref in refs:
            found = (
                await find_upload(self.store, principal.owner, ref.asset_id)
                if ASSET_ID.match(ref.asset_id)
                else None
            )
            if found is None:
                raise _missing(ref.param, f"no asset {ref.asset_id[:64]!r}")
            names[ref.param] = found.key.rsplit("/", 1)[-1]
        return names

    async def fetch(self, url: str, principal: Principal, field: str = "url") -> tuple[str, str]:
        """Fetch ``url`` through the SSRF guard and store it as an asset: its id and kind."""
        response, final = await self.fetcher.open(url)
        try:
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_fetch_bytes:
                raise ApiError(
                    422,
                    ErrorCode.INPUT_FETCH_FAILED,
                    f"{field}: the file is larger than {self.max_fetch_bytes} bytes",
                    details={"url": url[:300]},
                )
            source = body_chunks(response, final)
            head = b""
            async for chunk in source:
                head += chunk
                if len(head) >= SNIFF_BYTES:
                    break
            try:
                media = check(head, response.headers.get("content-type"))
            except ApiError as exc:
                raise ApiError(
                    422, exc.code, f"{field}: {exc.message}", details=exc.details
                ) from exc
            asset_id = new_asset_id()
            key = upload_key(principal.owner, asset_id, media.content_type)

            async def everything() -> AsyncIterator[bytes]:
                yield head
                async for chunk in source:
                    yield chunk

            meta = {
                "owner": principal.owner,
                "asset-id": asset_id,
                "kind": media.kind,
                "source": "url",
            }
            try:
                await self.store.put_stream(
                    key, everything(), media.content_type, meta, self.max_fetch_bytes
                )
            except ValueError as exc:
                raise ApiError(
                    422,
                    ErrorCode.INPUT_FETCH_FAILED,
                    f"{field}: the file is larger than {self.max_fetch_bytes} bytes",
                    details={"url": url[:300]},
                ) from exc
            return asset_id, media.kind
        finally:
            await response.aclose()
