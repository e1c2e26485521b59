"""The orchestrator: the one writer of job state.

It consumes the gateway's submissions and the workers' run events from JetStream, applies each
through the state machine in ``comfyline.contracts``, writes the job record (KV, compare-and-set)
and only then publishes the job's event on ``JOBS``; it checks content policy, enhances prompts,
dispatches work, enforces deadlines, counts attempts and cost, cancels, and sends signed webhooks.
"""

from .records import Change, JobMissing, JobStore, Snapshot
from .service import Orchestrator
from .settings import Settings, WebhookSettings
from .transitions import Verdict, advance, end
from .usage import UsageBook, job_cost, usage_key
from .webhooks import sign, signed_headers, wants, webhook_body

__all__ = [
    "Change",
    "JobMissing",
    "JobStore",
    "Orchestrator",
    "Settings",
    "Snapshot",
    "UsageBook",
    "Verdict",
    "WebhookSettings",
    "advance",
    "end",
    "job_cost",
    "sign",
    "signed_headers",
    "usage_key",
    "wants",
    "webhook_body",
]
