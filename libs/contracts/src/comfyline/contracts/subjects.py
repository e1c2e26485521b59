"""Subject, stream, consumer and bucket names: the only place they are spelt.

Every name comes from a :class:`Names` built with a namespace. Production uses the empty
namespace; tests and benchmarks use a unique one each, so they share one NATS server without
seeing each other's messages::

    names = Names()                 # production
    names.work("sdxl-txt2img")      # "work.sdxl-txt2img"
    Names("t3f9").work("cpu-smoke") # "t3f9.work.cpu-smoke"
    Names("t3f9").stream("JOBS")    # "t3f9_JOBS"
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Literal

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

StreamName = Literal["JOBS", "RUNS", "WORK", "TIMERS", "DEADLETTER", "OUTPUTS"]
BucketName = Literal[
    "jobs", "workers", "models", "idempotency", "ratelimits", "keys", "usage", "fleet", "batches"
]


class InvalidToken(ValueError):
    """A value that cannot be one token of a subject."""


def token(value: str) -> str:
    """Check that ``value`` is one safe subject token (letters, digits, ``_``, ``-``)."""
    if not _TOKEN.match(value):
        raise InvalidToken(f"not a safe subject token: {value!r}")
    return value


def owner_token(owner_id: str) -> str:
    """A safe, stable token for an owner id of any shape (emails, UUIDs, ``sub`` claims)."""
    if _TOKEN.match(owner_id) and len(owner_id) <= 64:
        return owner_id
    digest = hashlib.sha256(owner_id.encode()).hexdigest()[:24]
    return f"o-{digest}"


@dataclass(frozen=True, slots=True)
class Names:
    """Builds every subject and resource name for one namespace."""

    namespace: str = ""

    def __post_init__(self) -> None:
        if self.namespace:
            token(self.namespace)

    def _subject(self, *parts: str) -> str:
        prefix = (self.namespace,) if self.namespace else ()
        return ".".join((*prefix, *parts))

    def _resource(self, name: str) -> str:
        return f"{self.namespace}_{name}" if self.namespace else name

    # --- JOBS: the canonical log of every job's events ---
    def job_event(self, owner: str, job_id: str, kind: str) -> str:
        """``jobs.<owner>.<job_id>.<kind>``: one job event."""
        return self._subject("jobs", token(owner), token(job_id), token(kind))

    def job_events_filter(self, job_id: str) -> str:
        """Every event of one job, whatever its owner."""
        return self._subject("jobs", "*", token(job_id), ">")

    def owner_events_filter(self, owner: str) -> str:
        """Every event of one owner's jobs (a dashboard)."""
        return self._subject("jobs", token(owner), ">")

    def all_job_events(self) -> str:
        """Every job event (the JOBS stream's subjects)."""
        return self._subject("jobs", ">")

    def job_kind_filter(
        self, kind: str, owner: str | None = None, job_id: str | None = None
    ) -> str:
        """``jobs.<owner|*>.<job_id|*>.<kind>``: one kind of event (any owner or job by default)."""
        return self._subject(
            "jobs", token(owner) if owner else "*", token(job_id) if job_id else "*", token(kind)
        )

    def submissions_filter(self) -> str:
        """Every ``submitted`` event: what the orchestrator consumes from JOBS."""
        return self.job_kind_filter("submitted")

    # --- a pipeline's steps: their events again, for the pipeline (stored in JOBS) ---
    def step_event(self, parent_id: str, job_id: str, kind: str) -> str:
        """``steps.<parent_id>.<job_id>.<kind>``: an event of a pipeline's step job, told to its
        pipeline (the same event is on ``jobs.…`` for everyone else). Only step jobs' events
        come here, so the pipelines consumer is never handed the events of other jobs."""
        return self._subject("steps", token(parent_id), token(job_id), token(kind))

    def all_step_events(self) -> str:
        """Every step job's event for its pipeline (the JOBS stream's second subjects)."""
        return self._subject("steps", ">")

    # --- RUNS: what workers report ---
    def run_event(self, job_id: str, kind: str) -> str:
        """``runs.<job_id>.<kind>``: a worker's report about one run."""
        return self._subject("runs", token(job_id), token(kind))

    def all_run_events(self) -> str:
        """Every run event (the RUNS stream's subjects)."""
        return self._subject("runs", ">")

    # --- WORK: one work-queue subject per model ---
    def work(self, model: str, lane: str = "interactive") -> str:
        """``work.<model>``: interactive jobs waiting for a worker that serves ``model``;
        ``work.<model>.batch``: its batch jobs, fetched only when no interactive job waits."""
        if lane == "interactive":
            return self._subject("work", token(model))
        return self._subject("work", token(model), token(lane))

    def work_key(self, subject: str) -> tuple[str, str]:
        """``(model, lane)`` of a work subject (see :meth:`work`)."""
        rest = subject.removeprefix(self.all_work()[:-1]).split(".")
        return rest[0], rest[1] if len(rest) > 1 else "interactive"

    def all_work(self) -> str:
        """Every model's work subject (the WORK stream's subjects)."""
        return self._subject("work", ">")

    # --- OUTPUTS: small outputs kept in JetStream while fresh ---
    def fresh_output(self, key: str) -> str:
        """``outputs.<key>``: one fresh output, ``key`` (its object key) as one token
        (base64url, unpadded)."""
        encoded = base64.urlsafe_b64encode(key.encode()).rstrip(b"=").decode()
        return self._subject("outputs", encoded)

    def all_fresh_outputs(self) -> str:
        """Every fresh output (the OUTPUTS stream's subjects)."""
        return self._subject("outputs", "*")

    # --- timers and dead letters ---
    def timer(self, kind: str, job_id: str) -> str:
        """``timers.<kind>.<job_id>``: a durable timer (deadline, webhook retry)."""
        return self._subject("timers", token(kind), token(job_id))

    def all_timers(self) -> str:
        """Every timer subject (the TIMERS stream's subjects)."""
        return self._subject("timers", ">")

    def dead_letter(self, model: str) -> str:
        """``deadletter.<model>``: work that could not be delivered within its retry limit."""
        return self._subject("deadletter", token(model))

    def all_dead_letters(self) -> str:
        """Every dead-letter subject."""
        return self._subject("deadletter", ">")

    def max_deliveries_advisory(self, model: str) -> str:
        """The server's advisory when a WORK message reaches ``MaxDeliver``."""
        stream = self.stream("WORK")
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{self.work_consumer(model)}"

    def all_max_deliveries_advisories(self) -> str:
        """Every MAX_DELIVERIES advisory of the WORK stream."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream('WORK')}.*"

    # --- request/reply and control ---
    def enhance(self) -> str:
        """``enhance.v1``: prompt enhancement (request/reply, queue group)."""
        return self._subject("enhance", "v1")

    def policy(self) -> str:
        """``policy.v1``: content policy classification (request/reply, queue group)."""
        return self._subject("policy", "v1")

    def cancel(self, job_id: str) -> str:
        """``control.cancel.<job_id>``: heard by the worker that holds the job."""
        return self._subject("control", "cancel", token(job_id))

    def cancel_request(self) -> str:
        """``orchestrator.cancel.v1``: the gateway asks the orchestrator to cancel a job."""
        return self._subject("orchestrator", "cancel", "v1")

    def all_cancels(self) -> str:
        """Every cancel command."""
        return self._subject("control", "cancel", "*")

    # --- streams, consumers, buckets, queue groups ---
    def stream(self, name: StreamName) -> str:
        """A stream's name in this namespace."""
        return self._resource(name)

    def bucket(self, name: BucketName) -> str:
        """A KV bucket's name in this namespace."""
        return self._resource(name)

    def work_consumer(self, model: str, lane: str = "interactive") -> str:
        """The durable pull consumer of one model's work in one lane (shared by its workers):
        ``work-<model>``, ``work-<model>-batch``."""
        suffix = "" if lane == "interactive" else f"-{token(lane)}"
        return f"work-{token(model)}{suffix}"

    def queue_group(self, service: str) -> str:
        """The queue group that the replicas of one service share."""
        return self._resource(token(service))

    def consumer(self, name: str) -> str:
        """A durable consumer's name (consumer names are per stream, so no prefix is needed)."""
        return token(name)
