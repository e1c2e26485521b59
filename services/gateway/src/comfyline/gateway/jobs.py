"""The jobs service: what every API dialect does with jobs, in one place.

Routes (``/v1`` and any other dialect the gateway speaks) translate HTTP to these calls and the
results back; they never publish to NATS or read S3 themselves:

- :meth:`JobService.submit`: validate and queue a job (through the :class:`Submitter`);
- :meth:`JobService.load`: a job the caller may see (404 otherwise);
- :meth:`JobService.wait`: the job once it has ended, or as it is after some seconds;
- :meth:`JobService.cancel`: ask the orchestrator, the one writer of job state, to cancel;
- :meth:`JobService.page`: the caller's jobs, newest first, a page at a time;
- :meth:`JobService.output` / :meth:`JobService.output_chunks`: one output and its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from comfyline.contracts import (
    TERMINAL_EVENTS,
    CancelReply,
    CancelRequest,
    Enhancement,
    EnhanceReply,
    EnhanceRequest,
    ErrorCode,
    JobRecord,
    JobState,
    OutputRef,
    id_timestamp_ms,
)
from comfyline.runtime import Bus, BusError, ObjectNotFound, ObjectStore

from .auth import Principal
from .errors import ApiError, not_found
from .fanout import Fanout, Listener
from .fleet import Fleet
from .joblog import JobLog
from .links import OutputLinks
from .schemas import JobCreate
from .settings import Settings
from .submit import Submitted, Submitter
from .views import WAITING

JOB_ID = re.compile(r"^job_[0-9a-z]{26}$")
MAX_SCAN = 1000


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of an owner's jobs, newest first."""

    records: list[JobRecord]
    next_cursor: str | None
    has_more: bool


class JobService:
    """Submit, load, wait for, cancel and list jobs, and reach their outputs."""

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        store: ObjectStore,
        joblog: JobLog,
        fleet: Fleet,
        fanout: Fanout,
        submitter: Submitter,
        links: OutputLinks,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.store = store
        self.joblog = joblog
        self.fleet = fleet
        self.fanout = fanout
        self.submitter = submitter
        self.links = links

    async def submit(
        self,
        principal: Principal,
        body: JobCreate,
        idempotency_key: str | None,
        request_id: str | None,
    ) -> Submitted:
        """Validate and queue one job (or find the job an identical earlier request made)."""
        return await self.submitter.submit(principal, body, idempotency_key, request_id)

    async def load(self, principal: Principal, job_id: str) -> JobRecord:
        """The job, if the caller may see it; 404 for a missing id and for another owner's."""
        record = await self.joblog.find(job_id) if JOB_ID.match(job_id) else None
        if record is None or not principal.may_see(record.owner):
            raise not_found("job", job_id=job_id[:64])
        return record

    async def has_events_after(self, job_id: str, seq: int) -> bool:
        """Whether the job has events with a stream sequence above ``seq``."""
        events = self.joblog.replay(self.bus.names.job_events_filter(job_id), seq)
        async with contextlib.aclosing(events):
            async for _ in events:
                return True
        return False

    async def queue_position(self, record: JobRecord) -> int | None:
        """Approximately how many jobs are ahead: the model's backlog (while waiting)."""
        if record.status not in WAITING:
            return None
        return await self.fleet.queue_depth(record.model)

    async def submit_and_wait(
        self,
        principal: Principal,
        body: JobCreate,
        idempotency_key: str | None,
        request_id: str | None,
        seconds: float,
    ) -> Submitted:
        """Submit, then wait up to ``seconds`` for the job to end (``Prefer: wait``).

        A new job's events are listened to from before its ``submitted`` is published, so none
        can be missed and nothing needs reading back; a replayed one is waited for as any job.
        """
        with contextlib.ExitStack() as stack:
            opened: list[Listener] = []

            def listen(job_id: str) -> None:
                opened.append(stack.enter_context(self.fanout.listen(job_id=job_id, ends=True)))

            result = await self.submitter.submit(
                principal, body, idempotency_key, request_id, before_publish=listen
            )
            record = result.record
            if record.status.terminal:
                return result
            if opened and not result.replayed and opened[0].job_id == record.id:
                record = await self._until_ended(opened[0], record, seconds)
            else:
                record = await self.wait(record, seconds)
        return Submitted(record, replayed=result.replayed)

    async def wait(self, record: JobRecord, seconds: float) -> JobRecord:
        """The job once it has ended, or as it is when ``seconds`` have passed."""
        with self.fanout.listen(job_id=record.id, ends=True) as listener:
            current = await self.joblog.find(record.id) or record
            return await self._until_ended(listener, current, seconds)

    async def _until_ended(
        self, listener: Listener, current: JobRecord, seconds: float
    ) -> JobRecord:
        """``current`` as ``listener``'s events change it, until it ends or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        job_id = current.id
        while not current.status.terminal:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                _, event = await asyncio.wait_for(listener.queue.get(), remaining)
            except TimeoutError:
                break
            if event.kind in TERMINAL_EVENTS:
                # The event carries the record as written (older events: read it back).
                if event.record is not None and event.record.id == job_id:
                    current = event.record
                else:
                    current = await self.joblog.find(job_id) or current
                if not current.status.terminal:
                    current = current.model_copy(update={"status": event.status})
                else:
                    self.links.warm(current.outputs)  # downloaded next, most often
        return current

    async def cancel(self, principal: Principal, job_id: str) -> JobRecord:
        """Cancel a job the caller may see; the job as it is after the orchestrator answered.

        409 ``job_already_terminal`` if it has ended, 404 if it is unknown, 503 if the
        orchestrator refuses or is silent.
        """
        record = await self.load(principal, job_id)
        if record.status.terminal:
            raise already_terminal(record.status)
        reply = await self.ask_cancel(principal, job_id)
        if not reply.ok:
            if reply.code == ErrorCode.JOB_ALREADY_TERMINAL.value:
                raise already_terminal(reply.status)
            if reply.code == ErrorCode.NOT_FOUND.value:
                raise not_found("job", job_id=job_id)
            raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, reply.error or "cancel refused")
        current = await self.joblog.find(job_id) or record
        if reply.status is not None and not current.status.terminal:
            current = current.model_copy(update={"status": reply.status})
        return current

    async def ask_cancel(self, principal: Principal, job_id: str) -> CancelReply:
        """The orchestrator's answer to cancelling one job (503 if it is silent)."""
        ask = CancelRequest(job_id=job_id, owner="*" if principal.is_admin else principal.owner)
        try:
            return await self.bus.request(
                self.bus.names.cancel_request(),
                ask,
                CancelReply,
                timeout=self.settings.request_timeout_s,
            )
        except BusError as exc:
            raise ApiError(
                503,
                ErrorCode.SERVICE_UNAVAILABLE,
                "the orchestrator did not answer; try again",
                headers={"Retry-After": "2"},
            ) from exc

    async def page(
        self,
        owner: str,
        *,
        status: JobState | None = None,
        model: str | None = None,
        since: datetime | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> JobPage:
        """The owner's jobs (``owner`` as an owner token), newest first, filtered."""
        # A status filter starts from the jobs that can be in that state (from the log's subject
        # index), so a rare state is found however many other jobs the owner has.
        ids = await (
            self.joblog.ids_in_state(owner, status) if status else self.joblog.job_ids(owner)
        )
        if cursor:
            ids = [i for i in ids if i < cursor]
        if since is not None:
            cutoff = since.timestamp() * 1000
            ids = [i for i in ids if _created_ms(i) >= cutoff]
        found: list[JobRecord] = []
        next_cursor = None
        scanned = 0
        for start in range(0, len(ids), limit):
            chunk = ids[start : start + limit]
            records = await asyncio.gather(*(self.joblog.find(i) for i in chunk))
            for job_id, record in zip(chunk, records, strict=True):
                scanned += 1
                if record is not None and _matches(record, status, model):
                    found.append(record)
                if len(found) == limit or scanned >= MAX_SCAN:
                    next_cursor = job_id
                    break
            if next_cursor:
                break
        has_more = next_cursor is not None and ids[-1] != next_cursor
        return JobPage(found, next_cursor if has_more else None, has_more)

    async def enhance(self, request: EnhanceRequest) -> Enhancement:
        """What the prompt-enhancer makes of a prompt (504 if it is slow, 503 if it is absent,
        422 if it refuses the prompt)."""
        try:
            reply = await self.bus.request(
                self.bus.names.enhance(),
                request,
                EnhanceReply,
                timeout=self.settings.enhance_timeout_s,
            )
        except BusError as exc:
            if exc.code is ErrorCode.TIMEOUT:
                raise ApiError(
                    504, ErrorCode.TIMEOUT, "the enhancer did not answer in time"
                ) from exc
            raise ApiError(
                503,
                ErrorCode.ENHANCER_UNAVAILABLE,
                "the enhancer is unavailable",
                headers={"Retry-After": "5"},
            ) from exc
        if not reply.ok or reply.enhancement is None:
            code = _enhancer_code(reply.code)
            status = 422 if code in {ErrorCode.VALIDATION_ERROR, ErrorCode.CONTENT_POLICY} else 503
            raise ApiError(status, code, reply.error or "the enhancer refused the prompt")
        return reply.enhancement

    @staticmethod
    def output(record: JobRecord, index: int) -> OutputRef:
        """One of the job's outputs (404 if it has none at ``index``)."""
        for ref in record.outputs:
            if ref.index == index:
                return ref
        raise not_found("output", job_id=record.id, output=index)

    def output_link(self, ref: OutputRef, base: str) -> str:
        """A link to an output, made now (the gateway's while the output is fresh, else a
        presigned S3 link)."""
        return self.links.url(ref, base, self.settings.s3.link_expiry_s, filename_of(ref))

    async def output_chunks(self, record: JobRecord, ref: OutputRef) -> AsyncIterator[bytes]:
        """The output's bytes from storage, streamed (404 here, before the first byte, if the
        object is gone)."""
        try:
            return await self.object_chunks(ref.key)
        except ObjectNotFound as exc:
            raise not_found("output", job_id=record.id, output=ref.index) from exc

    async def object_chunks(
        self, key: str, offset: int = 0, length: int = 0
    ) -> AsyncIterator[bytes]:
        """An object's bytes (``length`` bytes from ``offset``; 0: to the end): a fresh output's
        from JetStream, any other streamed from S3; ``ObjectNotFound`` here, before the first
        byte, if the object is gone."""
        found = await self.links.read(key) if key.startswith("outputs/") else None
        if found is not None:
            end = offset + length if length else len(found.data)
            return _once(found.data[offset:end])
        chunks = self.store.iter_object(key, offset=offset, length=length)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = b""

        async def body() -> AsyncIterator[bytes]:
            yield first
            async for chunk in chunks:
                yield chunk

        return body()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def filename_of(ref: OutputRef) -> str:
    return ref.key.rsplit("/", 1)[-1]


def already_terminal(status: JobState | None) -> ApiError:
    state = status.value if status else "finished"
    return ApiError(
        409,
        ErrorCode.JOB_ALREADY_TERMINAL,
        f"the job has already ended ({state})",
        details={"status": state},
    )


def _enhancer_code(value: str | None) -> ErrorCode:
    try:
        return ErrorCode(value or "")
    except ValueError:
        return ErrorCode.ENHANCER_UNAVAILABLE


def _created_ms(job_id: str) -> int:
    try:
        return id_timestamp_ms(job_id)
    except ValueError:
        return 0


def _matches(record: JobRecord, status: JobState | None, model: str | None) -> bool:
    return (status is None or record.status is status) and (model is None or record.model == model)
