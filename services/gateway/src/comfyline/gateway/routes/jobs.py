"""``/v1/jobs``: submit, list, read and cancel jobs; reach their outputs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from fastapi.routing import APIRoute, serialize_response

from comfyline.contracts import JobRecord, JobState, owner_token

from ..auth import Principal
from ..deps import Gateway, GatewayDep, StatusUser, SubmitUser, caller, owner_param
from ..errors import error_responses, request_id_of
from ..jobs import filename_of
from ..schemas import JobCreate, JobList, JobPublic
from ..views import WAITING

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_BY_ID = {"job_id": "$response.body#/id"}
JOB_LINKS = {
    "GetJob": {"operationId": "get_job", "parameters": _BY_ID},
    "CancelJob": {"operationId": "cancel_job", "parameters": _BY_ID},
    "GetOutput": {"operationId": "output_link", "parameters": {**_BY_ID, "index": 0}},
    "GetOutputContent": {"operationId": "output_content", "parameters": {**_BY_ID, "index": 0}},
}
IDEMPOTENCY_KEY_MAX = 255
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)


async def public(
    gw: Gateway, request: Request, user: Principal, record: JobRecord, inline: bool = True
) -> JobPublic:
    view = await gw.views.job(
        record,
        base=gw.base_url(request),
        principal=user,
        inline=inline,
        queue_position=await gw.job_service.queue_position(record),
    )
    pause = gw.orders.paused(record.model) if record.status in WAITING else None
    if pause is not None and view.waiting_reason is None:  # dispatched, waiting in WORK
        view.waiting_reason = pause.waiting_reason
    return view


def prefer_wait(prefer: str | None, cap: float) -> float | None:
    """Seconds of ``Prefer: wait=N`` (RFC 7240), capped; None when absent."""
    match = _WAIT.search(prefer or "")
    return min(float(match.group(1)), cap) if match else None


class SubmitRoute(APIRoute):
    """``POST /v1/jobs``, the gateway's busiest route, answered without FastAPI's per-request
    dependency solving when the request is one FastAPI would take as it is: a JSON body that
    is a valid :class:`JobCreate`, headers within their limits, a running gateway. The handler
    then does what the route's dependencies do (authenticate, count the request), calls the
    same endpoint and serializes its answer as FastAPI does (:meth:`answer`). Any other request
    takes FastAPI's own handler (the body already read is kept for it), so every refusal, and
    which comes first, stays FastAPI's. The route stays in the OpenAPI document as declared.
    (Most submissions do not even reach the router: see :mod:`..lane`.)"""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        general = super().get_route_handler()

        async def handler(request: Request) -> Response:
            gw = getattr(request.app.state, "gateway", None)
            key = request.headers.get("idempotency-key")
            if not isinstance(gw, Gateway) or not takes_headers(
                request.headers.get("content-type"), key
            ):
                return await general(request)
            try:
                raw = await request.body()
            except HTTPException:
                raise  # the body-limit middleware's refusals, as FastAPI lets them through
            except Exception:
                return await general(request)
            body = parse_submission(raw)
            if body is None:  # not JSON (or nested past the parser), not a job: FastAPI's
                return await general(request)
            return await self.answer(request, gw, body)

        return handler

    async def answer(self, request: Request, gw: Gateway, body: JobCreate) -> Response:
        """Authenticate and count the request, then submit ``body`` and answer as FastAPI
        would (the route's status, its response model serialized)."""
        user = await caller(request, gw, "submit")
        response = Response()
        del response.headers["content-length"]
        response.status_code = None  # type: ignore[assignment]
        key = request.headers.get("idempotency-key")
        view = await create_job(
            body, request, response, user, gw, key, request.headers.get("prefer")
        )
        content = await serialize_response(
            field=self.response_field,
            response_content=view,
            include=self.response_model_include,
            exclude=self.response_model_exclude,
            by_alias=self.response_model_by_alias,
            exclude_unset=self.response_model_exclude_unset,
            exclude_defaults=self.response_model_exclude_defaults,
            exclude_none=self.response_model_exclude_none,
            dump_json=True,
        )
        answer = Response(
            content=content,
            media_type="application/json",
            status_code=response.status_code or self.status_code or 200,
        )
        answer.headers.raw.extend(response.headers.raw)
        return answer


def takes_headers(content_type: str | None, idempotency_key: str | None) -> bool:
    """A submission's headers as FastAPI takes them as they are: a JSON body, a key within
    its length."""
    kind = (content_type or "").partition(";")[0].strip().lower()
    key_ok = idempotency_key is None or len(idempotency_key) <= IDEMPOTENCY_KEY_MAX
    return kind == "application/json" and key_ok


def parse_submission(raw: bytes) -> JobCreate | None:
    """The body as a job, or None when FastAPI would refuse it (not JSON, nested past the
    parser's limit, not a valid :class:`JobCreate`)."""
    try:
        return JobCreate.model_validate(json.loads(raw))
    except Exception:
        return None


async def create_job(
    body: JobCreate,
    request: Request,
    response: Response,
    user: SubmitUser,
    gw: GatewayDep,
    idempotency_key: Annotated[
        str | None,
        Header(description="same key + same body: the same job", max_length=IDEMPOTENCY_KEY_MAX),
    ] = None,
    prefer: Annotated[str | None, Header(description="`wait=N`: hold up to N s")] = None,
) -> JobPublic:
    """Validate the input against the model's parameters and queue the job (202).

    `Idempotency-Key` makes retries safe: the same key with the same body answers the same job
    (`Idempotent-Replayed: true`), with another body 409. `Prefer: wait=N` holds the answer
    until the job ends (200) or N seconds pass (202).
    """
    wait = prefer_wait(prefer, gw.settings.prefer_wait_max_s)
    service = gw.job_service
    if wait:
        result = await service.submit_and_wait(
            user, body, idempotency_key, request_id_of(request), wait
        )
    else:
        result = await service.submit(user, body, idempotency_key, request_id_of(request))
    record = result.record
    if wait is not None:
        response.headers["Preference-Applied"] = f"wait={int(wait)}"
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.status_code = 200 if record.status.terminal else 202
    view = await public(gw, request, user, record, inline=record.status.terminal)
    response.headers["Location"] = view.links.self
    return view


router.add_api_route(
    "",
    create_job,
    methods=["POST"],
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
    route_class_override=SubmitRoute,
)


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
    found = await gw.job_service.page(
        who, status=status, model=model, since=since, cursor=cursor, limit=limit
    )
    waiting = {r.model for r in found.records if r.status in WAITING}
    depth = {model: await gw.fleet.queue_depth(model) for model in sorted(waiting)}
    base = gw.base_url(request)
    views = [
        await gw.views.job(r, base=base, principal=user, queue_position=depth.get(r.model))
        for r in found.records
    ]
    return JobList(data=views, next_cursor=found.next_cursor, has_more=found.has_more)


@router.get("/{job_id}", summary="Read a job", responses=error_responses(401, 404, 429, 503))
async def get_job(job_id: str, request: Request, user: StatusUser, gw: GatewayDep) -> JobPublic:
    """The job now, with fresh output links (and inline outputs for `b64_json` jobs)."""
    return await public(gw, request, user, await gw.job_service.load(user, job_id))


@router.delete(
    "/{job_id}",
    status_code=202,
    summary="Cancel a job",
    responses=error_responses(401, 404, 409, 429, 503),
)
async def cancel_job(job_id: str, request: Request, user: StatusUser, gw: GatewayDep) -> JobPublic:
    """Ask the orchestrator to cancel the job (202); 409 `job_already_terminal` if it ended."""
    current = await gw.job_service.cancel(user, job_id)
    return await public(gw, request, user, current, inline=False)


@router.get(
    "/{job_id}/outputs/{index}",
    status_code=307,
    summary="Redirect to a fresh link to one output",
    response_class=RedirectResponse,
    responses={307: {"description": "to a presigned URL"}, **error_responses(401, 404, 422, 429)},
)
async def output_link(
    job_id: str, index: int, request: Request, user: StatusUser, gw: GatewayDep
) -> RedirectResponse:
    """A `307` to a link made now (the gateway's own while the output is fresh, else a
    presigned S3 link)."""
    ref = gw.job_service.output(await gw.job_service.load(user, job_id), index)
    return RedirectResponse(gw.job_service.output_link(ref, gw.base_url(request)), status_code=307)


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
    record = await gw.job_service.load(user, job_id)
    ref = gw.job_service.output(record, index)
    return StreamingResponse(
        await gw.job_service.output_chunks(record, ref),
        media_type=ref.content_type,
        headers={
            "Content-Disposition": f'inline; filename="{filename_of(ref)}"',
            "Cache-Control": "private, max-age=60",
        },
    )
