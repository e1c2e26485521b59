"""Public views of jobs and events, with links made at read time.

Output links are made when a job or an event is *sent*, never stored, so a link is always
fresh; signing is an offline HMAC (no network). A fresh output's link points at the gateway,
any other at S3 (see links.py). The ``events`` link carries a short-lived events
token for that job only, so a browser can follow it without holding the API key.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from comfyline.contracts import (
    EVENT_NAMES,
    JobEvent,
    JobRecord,
    JobState,
    OutputRef,
    PreviewRef,
    StepState,
)
from comfyline.runtime import FreshOutputs, ObjectNotFound, ObjectStore, StorageError

from .auth import Authenticator, Principal
from .links import OutputLinks
from .schemas import JobEventPublic, JobPublic, Links, OutputPublic, PreviewPublic, StepPublic
from .settings import Settings

WAITING = frozenset({JobState.QUEUED, JobState.ENHANCING, JobState.DISPATCHED})


class Views:
    """Builds what the API returns from what the log and the records say."""

    def __init__(
        self,
        store: ObjectStore,
        auth: Authenticator,
        settings: Settings,
        fresh: FreshOutputs | None = None,
    ) -> None:
        self.store = store
        self.auth = auth
        self.settings = settings
        self.output_links = OutputLinks(store, fresh, auth.events_secret)

    def expiry(self) -> tuple[int, datetime]:
        seconds = self.settings.s3.link_expiry_s
        return seconds, datetime.now(UTC) + timedelta(seconds=seconds)

    def links(self, base: str, job_id: str, principal: Principal) -> Links:
        token = self.auth.issue_events_token(principal, job_id, self.settings.events_token_ttl_s)
        href = f"{base}/v1/jobs/{job_id}"
        return Links(self=href, events=f"{href}/events?token={token}", cancel=href)

    def output(
        self, base: str, job_id: str, ref: OutputRef, b64: str | None = None
    ) -> OutputPublic:
        seconds, expires = self.expiry()
        filename = ref.key.rsplit("/", 1)[-1]
        return OutputPublic(
            index=ref.index,
            kind=ref.kind.value,
            content_type=ref.content_type,
            size=ref.size,
            width=ref.width,
            height=ref.height,
            duration_s=ref.duration_s,
            url=self.output_links.url(ref, base, seconds, filename),
            url_expires_at=expires,
            content_url=f"{base}/v1/jobs/{job_id}/outputs/{ref.index}/content",
            b64_json=b64,
        )

    def step(self, base: str, state: StepState) -> StepPublic:
        """A pipeline's step, its outputs linked through the step's own job."""
        return StepPublic(
            name=state.name,
            model=state.model,
            job_id=state.job_id,
            status=state.status,
            progress=state.progress,
            outputs=[self.output(base, state.job_id, o) for o in state.outputs if state.job_id],
            cost=state.cost,
            error=state.error,
        )

    def preview(self, ref: PreviewRef) -> PreviewPublic:
        seconds, expires = self.expiry()
        return PreviewPublic(
            content_type=ref.content_type,
            url=self.store.presign_get(ref.key, seconds),
            url_expires_at=expires,
        )

    async def job(
        self,
        record: JobRecord,
        *,
        base: str,
        principal: Principal,
        inline: bool = False,
        queue_position: int | None = None,
    ) -> JobPublic:
        """The job resource; ``inline`` adds small outputs as base64 for ``b64_json`` jobs."""
        outputs = []
        for ref in record.outputs:
            b64 = None
            if (
                inline
                and record.response_format == "b64_json"
                and ref.size <= self.settings.bodies.max_b64_bytes
            ):
                try:
                    found = await self.output_links.read(ref.key)
                    data = found.data if found else await self.store.get_bytes(ref.key)
                    b64 = base64.b64encode(data).decode()
                except (StorageError, ObjectNotFound):
                    b64 = None  # the link still works; the bytes are best effort
            outputs.append(self.output(base, record.id, ref, b64))
        return JobPublic(
            id=record.id,
            model=record.model,
            template_version=record.template_version,
            status=record.status,
            progress=record.progress,
            queue_position=queue_position if record.status in WAITING else None,
            created_at=record.created_at,
            updated_at=record.updated_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            duration_ms=record.duration_ms,
            attempts=record.attempts,
            input=record.input,
            metadata=record.metadata,
            response_format=record.response_format,
            enhancement=record.enhancement,
            outputs=outputs,
            error=record.error,
            cost=record.cost,
            webhook=record.webhook,
            webhook_deliveries=record.webhook_deliveries,
            parent=record.parent,
            steps=[self.step(base, s) for s in record.steps],
            priority=record.priority,
            batch_id=record.batch_id,
            retry_of=record.retry_of,
            replaced_by=record.replaced_by,
            waiting_reason=record.waiting_reason if not record.status.terminal else None,
            links=self.links(base, record.id, principal),
        )

    def event(self, seq: int, event: JobEvent, base: str) -> JobEventPublic:
        """One event as SSE data / WebSocket payload, links made now."""
        return JobEventPublic(
            job_id=event.job_id,
            seq=seq,
            event=EVENT_NAMES[event.kind].sse,
            kind=event.kind.value,
            status=event.status,
            occurred_at=event.occurred_at,
            model=event.model,
            attempt=event.attempt,
            progress=event.progress,
            preview=self.preview(event.preview) if event.preview else None,
            outputs=[self.output(base, event.job_id, o) for o in event.outputs],
            error=event.error,
            retry_in_s=event.retry_in_s,
            waiting_reason=event.waiting_reason,
            queue_position=event.queue_position,
            enhancement=event.enhancement,
            parent=event.parent,
            step=self.step(base, event.step) if event.step else None,
            steps=[self.step(base, s) for s in event.steps],
        )
