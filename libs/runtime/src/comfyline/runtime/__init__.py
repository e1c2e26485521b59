"""Comfyline's shared runtime: NATS, S3, tracing, logs, settings and the service lifecycle.

Every service builds on these so that each concern has one mechanism: one way to publish (with
trace and dedup headers), one consumer loop that maps handler outcomes to acks, one object store.
"""

from .bus import Bus, BusError, message_headers
from .consume import (
    Delivery,
    Handler,
    KeyOf,
    Reject,
    Retry,
    backoff_delay,
    durable_config,
    ensure_consumer,
    heartbeat,
    run_consumer,
    serve,
    settle,
)
from .fleet import FleetOrders
from .fresh import Archiver, FreshObject, FreshOutputs, FreshSettings
from .http import LoopSession
from .kv import LastWrites, cas_pause, follow_bucket, scan
from .lifecycle import install_stop_signals, run, settle_heap
from .logs import job_id_var, model_var, setup_logging
from .models import LiveCatalogue
from .moments import Moments, RunMark
from .service import start
from .settings import (
    NatsSettings,
    OtelSettings,
    S3Settings,
    ServiceSettings,
    UrlPolicySettings,
)
from .storage import ObjectInfo, ObjectNotFound, ObjectStore, StorageError
from .tasks import cancel_and_wait, retrieve
from .tracing import (
    current_trace_id,
    extract_context,
    inject_headers,
    setup_tracing,
    shutdown_tracing,
    span,
    tracer,
)

__all__ = [
    "Archiver",
    "Bus",
    "BusError",
    "Delivery",
    "FleetOrders",
    "FreshObject",
    "FreshOutputs",
    "FreshSettings",
    "Handler",
    "KeyOf",
    "LastWrites",
    "LiveCatalogue",
    "LoopSession",
    "Moments",
    "NatsSettings",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "OtelSettings",
    "Reject",
    "Retry",
    "RunMark",
    "S3Settings",
    "ServiceSettings",
    "StorageError",
    "UrlPolicySettings",
    "backoff_delay",
    "cancel_and_wait",
    "cas_pause",
    "current_trace_id",
    "durable_config",
    "ensure_consumer",
    "extract_context",
    "follow_bucket",
    "heartbeat",
    "inject_headers",
    "install_stop_signals",
    "job_id_var",
    "message_headers",
    "model_var",
    "retrieve",
    "run",
    "run_consumer",
    "scan",
    "serve",
    "settle",
    "settle_heap",
    "setup_logging",
    "setup_tracing",
    "shutdown_tracing",
    "span",
    "start",
    "tracer",
]
