"""``/v1/jobs``: submit, list, read and cancel jobs; reach their outputs."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from comfyline.contracts import (
    TERMINAL_EVENTS,
    CancelReply,
    CancelRequest,
    ErrorCode,
    JobRecord,
    JobState,
    id_timestamp_ms,
    owner_token,
)
from comfyline.runtime import BusError, ObjectNotFound

from ..auth import Principal
from ..deps import Gateway, GatewayDep, StatusUser, SubmitUser, owner_param
from ..errors import ApiError, error_responses, not_found, request_id_of
from ..schemas import JobCreate, JobList, JobPublic
from ..views import WAITING

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JOB_ID = re.compile(r"^job_[0-9a-z]{26}$")
MAX_SCAN = 1000
_BY_ID = {"job_id": "$response.body#/id"}
JOB_LINKS = {
    "GetJob": {"operationId": "get_job", "parameters": _BY_ID},
    "CancelJob": {"operationId": "cancel_job", "parameters": _BY_ID},
    "GetOutput": {"operationId": "output_link", "parameters": {**_BY_ID, "index": 0}},
    "GetOutputContent": {"operationId": "output_content", "parameters": {**_BY_ID, "index": 0}},
}
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)


async def load_job(gw: Gateway, user: Principal, job_id: str) -> JobRecord:
    """The job, if the caller may see it; 404 for a missing id and for another owner's."""
    record = await gw.jobs.find(job_id) if JOB_ID.match(job_id) else None
    if record is None or not user.may_see(record.owner):
        raise not_found("job", job_id=job_id[:64])
    return record


async def queue_position(gw: Gateway, record: JobRecord) -> int | None:
    """Approximately how many jobs are ahead: the model's backlog (while waiting)."""
    if record.status not in WAITING:
        return None
    return await gw.fleet.queue_depth(record.model)


async def public(
    gw: Gateway, request: Request, user: Principal, record: JobRecord, inline: bool = True
) -> JobPublic:
    return await gw.views.job(
        record,
        base=gw.base_url(request),
        principal=user,
        inline=inline,
        queue_position=await queue_position(gw, record),
    )


def prefer_wait(prefer: str | None, cap: float) -> float | None:
    """Seconds of ``Prefer: wait=N`` (RFC 7240), capped; None when absent."""
    match = _WAIT.search(prefer or "")
    return min(float(match.group(1)), cap) if match else None


async def wait_until_done(gw: Gateway, record: JobRecord, seconds: float) -> JobRecord:
    """The job once it has ended, or as it is when ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    with gw.fanout.listen(job_id=record.id) as listener:
        current = await gw.jobs.find(record.id) or record
        while not current.status.terminal:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                _, event = await asyncio.wait_for(listener.queue.get(), remaining)
            except TimeoutError:
                break
            if event.kind in TERMINAL_EVENTS:
                # The orchestrator writes the record before it publishes the event.
                current = await gw.jobs.find(record.id) or current
                if not current.status.terminal:
                    current = current.model_copy(update={"status": event.status})
    return current


@router.post(
    "",
    status_code=202,
    summary="Submit a job",
    responses={
        202: {"description": "Queued", "links": JOB_LINKS},
        200: {
            "model": JobPublic,
            "description": "Finished within `Prefer: wait`",
            "links": JOB_LINKS,
        },
        **error_responses(400, 401, 403, 409, 413, 422, 429, 503, 504),
    },
)
async def create_job(
    body: JobCreate,
    request: Request,
    response: Response,
    user: SubmitUser,
    gw: GatewayDep,
    idempotency_key: Annotated[
        str | None, Header(description="same key + same body: the same job", max_length=255)
    ] = None,
    prefer: Annotated[str | None, Header(description="`wait=N`: hold up to N s")] = None,
) -> JobPublic:
    """Validate the input against the model's parameters and queue the job (202).

    `Idempotency-Key` makes retries safe: the same key with the same body answers the same job
    (`Idempotent-Replayed: true`), with another body 409. `Prefer: wait=N` holds the answer
    until the job ends (200) or N seconds pass (202).
    """
    result = await gw.submitter.submit(user, body, idempotency_key, request_id_of(request))
    record = result.record
    wait = prefer_wait(prefer, gw.settings.prefer_wait_max_s)
    if wait is not None:
        response.headers["Preference-Applied"] = f"wait={int(wait)}"
        if wait > 0 and not record.status.terminal:
            record = await wait_until_done(gw, record, wait)
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.status_code = 200 if record.status.terminal else 202
    view = await public(gw, request, user, record, inline=record.status.terminal)
    response.headers["Location"] = view.links.self
    return view


@router.get("", summary="List jobs", responses=error_responses(401, 403, 422, 429, 503))
async def list_jobs(
    request: Request,
    user: StatusUser,
    gw: GatewayDep,
    status: JobState | None = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[datetime | None, Query(description="created at or after")] = None,
    cursor: Annotated[str | None, Query(max_length=64, description="next_cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    owner: Annotated[str | None, Query(max_length=256, description="admins: any owner")] = None,
) -> JobList:
    """The caller's jobs, newest first, a page at a time (filters: status, model, since)."""
    who = owner_token(owner_param(user, owner))
    # A status filter starts from the jobs that can be in that state (from the log's subject
    # index), so a rare state is found however many other jobs the owner has.
    ids = await (gw.jobs.ids_in_state(who, status) if status else gw.jobs.job_ids(who))
    if cursor:
        ids = [i for i in ids if i < cursor]
    if since is not None:
        cutoff = since.timestamp() * 1000
        ids = [i for i in ids if _created_ms(i) >= cutoff]
    page: list[JobRecord] = []
    next_cursor = None
    scanned = 0
    for start in range(0, len(ids), limit):
        chunk = ids[start : start + limit]
        records = await asyncio.gather(*(gw.jobs.find(i) for i in chunk))
        for job_id, record in zip(chunk, records, strict=True):
            scanned += 1
            if record is not None and _matches(record, status, model):
                page.append(record)
            if len(page) == limit or scanned >= MAX_SCAN:
                next_cursor = job_id
                break
        if next_cursor:
            break
    has_more = next_cursor is not None and ids[-1] != next_cursor
    waiting = {r.model for r in page if r.status in WAITING}
    depth = {model: await gw.fleet.queue_depth(model) for model in sorted(waiting)}
    base = gw.base_url(request)
    views = [
        await gw.views.job(r, base=base, principal=user, queue_position=depth.get(r.model))
        for r in page
    ]
    return JobList(data=views, next_cursor=next_cursor if has_more else None, has_more=has_more)


def _created_ms(job_id: str) -> int:
    try:
        return id_timestamp_ms(job_id)
    except ValueError:
        return 0


def _matches(record: JobRecord, status: JobState | None, model: str | None) -> bool:
    return (status is None or record.status is status) and (model is None or record.model == model)


@router.get("/{job_id}", summary="Read a job", responses=error_responses(401, 404, 429, 503))
async def get_job(job_id: str, request: Request, user: StatusUser, gw: GatewayDep) -> JobPublic:
    """The job now, with fresh output links (and inline outputs for `b64_json` jobs)."""
    return await public(gw, request, user, await load_job(gw, user, job_id))


@router.delete(
    "/{job_id}",
    status_code=202,
    summary="Cancel a job",
    responses=error_responses(401, 404, 409, 429, 503),
)
async def cancel_job(job_id: str, request: Request, user: StatusUser, gw: GatewayDep) -> JobPublic:
    """Ask the orchestrator to cancel the job (202); 409 `job_already_terminal` if it ended."""
    record = await load_job(gw, user, job_id)
    if record.status.terminal:
        raise _terminal(record.status)
    reply = await ask_cancel(gw, user, job_id)
    if not reply.ok:
        if reply.code == ErrorCode.JOB_ALREADY_TERMINAL.value:
            raise _terminal(reply.status)
        if reply.code == ErrorCode.NOT_FOUND.value:
            raise not_found("job", job_id=job_id)
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, reply.error or "cancel refused")
    current = await gw.jobs.find(job_id) or record
    if reply.status is not None and not current.status.terminal:
        current = current.model_copy(update={"status": reply.status})
    return await public(gw, request, user, current, inline=False)


async def ask_cancel(gw: Gateway, user: Principal, job_id: str) -> CancelReply:
    """Ask the orchestrator, the one writer of job state, to cancel a job (503 if it is silent)."""
    ask = CancelRequest(job_id=job_id, owner="*" if user.is_admin else user.owner)
    try:
        return await gw.bus.request(
            gw.names.cancel_request(), ask, CancelReply, timeout=gw.settings.request_timeout_s
        )
    except BusError as exc:
        raise ApiError(
            503,
            ErrorCode.SERVICE_UNAVAILABLE,
            "the orchestrator did not answer; try again",
            headers={"Retry-After": "2"},
        ) from exc


def _terminal(status: JobState | None) -> ApiError:
    state = status.value if status else "finished"
    return ApiError(
        409,
        ErrorCode.JOB_ALREADY_TERMINAL,
        f"the job has already ended ({state})",
        details={"status": state},
    )


def _output(record: JobRecord, index: int) -> tuple[str, str, int, str]:
    for ref in record.outputs:
        if ref.index == index:
            return ref.key, ref.content_type, ref.size, ref.key.rsplit("/", 1)[-1]
    raise not_found("output", job_id=record.id, output=index)


@router.get(
    "/{job_id}/outputs/{index}",
    status_code=307,
    summary="Redirect to a fresh link to one output",
    response_class=RedirectResponse,
    responses={307: {"description": "to a presigned URL"}, **error_responses(401, 404, 422, 429)},
)
async def output_link(
    job_id: str, index: int, user: StatusUser, gw: GatewayDep
) -> RedirectResponse:
    """A `307` to a presigned link made now."""
    key, _, _, filename = _output(await load_job(gw, user, job_id), index)
    return RedirectResponse(gw.store.presign_get(key, filename=filename), status_code=307)


@router.get(
    "/{job_id}/outputs/{index}/content",
    summary="Stream one output's bytes",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the output's bytes",
            "content": {"image/png": {}, "audio/wav": {}, "video/mp4": {}},
        },
        **error_responses(401, 404, 422, 429, 503),
    },
)
async def output_content(
    job_id: str, index: int, user: StatusUser, gw: GatewayDep
) -> StreamingResponse:
    """The output's bytes, streamed from storage (never held whole)."""
    key, content_type, _, filename = _output(await load_job(gw, user, job_id), index)
    chunks = gw.store.iter_object(key)
    try:
        first = await anext(chunks)
    except ObjectNotFound as exc:
        raise not_found("output", job_id=job_id, output=index) from exc
    except StopAsyncIteration:
        first = b""

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(
        body(),
        media_type=content_type,
        headers={
            "Content-Disposition": f'inline; filename="{filename}"',
            "Cache-Control": "private, max-age=60",
        },
    )
