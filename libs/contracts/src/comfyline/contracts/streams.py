"""Stream and bucket specifications, as data (each service applies them idempotently at start)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .subjects import BucketName, Names, StreamName

DAY = 24 * 3600


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A JetStream stream: name, subjects, retention and limits."""

    name: str
    subjects: tuple[str, ...]
    retention: Literal["limits", "workqueue", "interest"] = "limits"
    max_age_s: float = 0
    duplicate_window_s: float = 120
    allow_msg_ttl: bool = False
    max_bytes: int = 0  # 0: no limit (a limit is set aside in JetStream's store at creation)
    max_msgs_per_subject: int = 0  # 0: no limit
    discard_new: bool = False  # at a limit, refuse new messages instead of dropping old ones
    allow_direct: bool = False  # direct gets (any replica answers a read by subject)


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """A KV bucket: name, history and TTL (0: keep)."""

    name: str
    history: int = 1
    ttl_s: float = 0
    per_key_ttl: bool = False


@dataclass(frozen=True, slots=True)
class Retention:
    """How long job data lives (configured, not accidental)."""

    jobs_days: float = 30
    runs_days: float = 7
    workers_ttl_s: float = 15


def stream_spec(names: Names, stream: StreamName, retention: Retention | None = None) -> StreamSpec:
    """The spec of one stream in ``names``' namespace."""
    keep = retention or Retention()
    specs: dict[StreamName, StreamSpec] = {
        "JOBS": StreamSpec(
            names.stream("JOBS"),
            (names.all_job_events(), names.all_step_events()),
            max_age_s=keep.jobs_days * DAY,
        ),
        "RUNS": StreamSpec(
            names.stream("RUNS"), (names.all_run_events(),), max_age_s=keep.runs_days * DAY
        ),
        "WORK": StreamSpec(
            names.stream("WORK"),
            (names.all_work(),),
            retention="workqueue",
            max_age_s=keep.runs_days * DAY,
        ),
        "TIMERS": StreamSpec(
            names.stream("TIMERS"),
            (names.all_timers(),),
            retention="workqueue",
            max_age_s=keep.jobs_days * DAY,
        ),
        "DEADLETTER": StreamSpec(
            names.stream("DEADLETTER"), (names.all_dead_letters(),), max_age_s=keep.jobs_days * DAY
        ),
    }
    return specs[stream]


def bucket_spec(names: Names, bucket: BucketName, retention: Retention | None = None) -> BucketSpec:
    """The spec of one KV bucket in ``names``' namespace."""
    keep = retention or Retention()
    specs: dict[BucketName, BucketSpec] = {
        "jobs": BucketSpec(names.bucket("jobs"), ttl_s=keep.jobs_days * DAY),
        "workers": BucketSpec(names.bucket("workers"), ttl_s=keep.workers_ttl_s),
        "models": BucketSpec(names.bucket("models"), history=5),
        "idempotency": BucketSpec(names.bucket("idempotency"), ttl_s=DAY),
        "ratelimits": BucketSpec(names.bucket("ratelimits"), ttl_s=3600, per_key_ttl=True),
        "keys": BucketSpec(names.bucket("keys")),
        "usage": BucketSpec(names.bucket("usage")),
        "fleet": BucketSpec(names.bucket("fleet")),
        "batches": BucketSpec(names.bucket("batches"), ttl_s=keep.jobs_days * DAY),
    }
    return specs[bucket]
