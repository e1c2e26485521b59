"""Operators' orders to the fleet, kept in the ``fleet`` bucket, and the fleet's health events.

An admin drains a worker (``drain.<worker_id>`` -> :class:`WorkerDrain`) or pauses a model
(``pause.<model>`` -> :class:`ModelPause`); deleting the key resumes it. Workers and orchestrators
watch the bucket, so an order reaches every process at once and survives their restarts.
:class:`WorkerEvent` is what the gateway tells admins when a worker's health changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .subjects import token
from .wire import WireModel

DRAIN_PREFIX = "drain."
PAUSE_PREFIX = "pause."


def drain_key(worker_id: str) -> str:
    """The ``fleet`` bucket key of a drain order for ``worker_id``."""
    return DRAIN_PREFIX + token(worker_id)


def pause_key(model: str) -> str:
    """The ``fleet`` bucket key of a pause of ``model``."""
    return PAUSE_PREFIX + token(model)


class WorkerDrain(WireModel):
    """A worker told to finish what it runs and take no more work (until resumed)."""

    worker_id: str
    reason: str = ""
    requested_at: datetime
    requested_by: str = Field(default="", description="the admin's owner id")


class ModelPause(WireModel):
    """A model whose jobs stay queued (not dispatched, not fetched) until resumed."""

    model: str
    reason: str = ""
    paused_at: datetime
    paused_by: str = Field(default="", description="the admin's owner id")

    @property
    def waiting_reason(self) -> str:
        """What a job of the paused model says while it waits: ``model_paused[: <reason>]``."""
        return f"model_paused: {self.reason}" if self.reason else "model_paused"


WorkerEventKind = Literal[
    "worker_joined", "worker_left", "worker_draining", "worker_resumed", "server_down", "server_up"
]


class WorkerEvent(WireModel):
    """A change in a worker's health, as admins see it on the dashboard stream."""

    kind: WorkerEventKind
    worker_id: str
    server: str | None = None
    occurred_at: datetime
    detail: str = ""
