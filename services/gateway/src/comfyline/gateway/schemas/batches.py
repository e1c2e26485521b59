"""Batches: many job requests submitted together, followed and cancelled as one."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from comfyline.contracts import Priority

from .jobs import JobCreate, JobPublic

BATCH_ID = "bat_01kax7r2m0a1b2c3d4e5f6g7h8"


class BatchCreate(BaseModel):
    """Job requests to submit together; all are checked before any is submitted."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "jobs": [
                        {"model": "cpu-smoke", "input": {"color": 255}},
                        {"model": "cpu-smoke", "input": {"color": 65280}},
                    ],
                    "metadata": {"campaign": "spring"},
                }
            ]
        },
    )

    jobs: list[JobCreate] = Field(min_length=1, max_length=1000)
    priority: Priority | None = Field(
        default=None,
        description="for jobs that do not set their own: batch by default (a key's lane, if set)",
    )
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)


class BatchCounts(BaseModel):
    """How many of the batch's jobs are in each state."""

    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    lost: int = Field(default=0, description="never submitted: the gateway died mid-batch")


class BatchPublic(BaseModel):
    """A batch: its progress, and every job with its outputs."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "object": "batch",
                    "id": BATCH_ID,
                    "status": "running",
                    "priority": "batch",
                    "total": 2,
                    "done": 1,
                    "progress": 50.0,
                    "counts": {"queued": 1, "succeeded": 1},
                    "created_at": "2026-11-23T12:00:00Z",
                    "metadata": {"campaign": "spring"},
                    "jobs": [],
                }
            ]
        }
    )

    object: Literal["batch"] = "batch"
    id: str
    status: Literal["running", "completed", "cancelled"] = Field(
        description="completed once every job has ended; cancelled once cancel was asked"
    )
    priority: Priority
    total: int
    done: int = Field(description="jobs that have ended, whatever the outcome (and lost ones)")
    progress: float = Field(description="percent of jobs ended")
    counts: BatchCounts
    created_at: datetime
    cancelled_at: datetime | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    jobs: list[JobPublic] = Field(description="in submission order")
