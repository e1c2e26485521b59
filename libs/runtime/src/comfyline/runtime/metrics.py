"""Prometheus metrics: every Comfyline metric is defined here, once, with its meaning.

Each service exposes them on ``/metrics`` (the gateway on its own port; the other services on
``metrics_port`` with ``/healthz`` and ``/readyz`` beside it, see :func:`serve_metrics`). Names
follow Prometheus conventions: ``comfyline_`` prefix, base units (seconds, bytes), ``_total`` on
counters. docs/operations.md says which of them to alert on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from .consume import Delivery

log = logging.getLogger(__name__)

#: Buckets for whole jobs and waits: from a fast image to a long video.
_JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
_FAST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# --- jobs (gateway: submitted; orchestrator: finished, once per job from the JOBS log) ---
JOBS_SUBMITTED = Counter("comfyline_jobs_submitted_total", "Jobs accepted by a gateway.", ["model"])
JOBS_FINISHED = Counter(
    "comfyline_jobs_finished_total",
    "Jobs that reached a terminal state, by outcome (succeeded, failed, cancelled, timed_out) "
    "and error code ('' when it succeeded).",
    ["model", "outcome", "code"],
)
JOB_DURATION = Histogram(
    "comfyline_job_duration_seconds",
    "From submission to the terminal state.",
    ["model", "outcome"],
    buckets=_JOB_BUCKETS,
)
# --- the autoscaling signal (gateway, read from the WORK stream at scrape time) ---
QUEUE_DEPTH = Gauge(
    "comfyline_queue_depth",
    "Jobs of a model in its work queue (waiting or being run), per lane.",
    ["model", "lane"],
)
QUEUE_OLDEST_AGE = Gauge(
    "comfyline_queue_oldest_age_seconds",
    "How long the oldest job in a model's work queue has been there (0 when it is empty).",
    ["model", "lane"],
)
# --- workers and ComfyUI servers ---
QUEUE_WAIT = Histogram(
    "comfyline_queue_wait_seconds",
    "From a job entering the work queue to a worker starting it.",
    ["model"],
    buckets=_JOB_BUCKETS,
)
RUN_DURATION = Histogram(
    "comfyline_run_duration_seconds",
    "One attempt on a ComfyUI server, from start to its outcome.",
    ["model", "outcome"],
    buckets=_JOB_BUCKETS,
)
SERVER_BUSY = Gauge(
    "comfyline_comfyui_server_busy",
    "1 while a ComfyUI server runs a job, 0 while it is idle.",
    ["server"],
)
SERVER_BUSY_SECONDS = Counter(
    "comfyline_comfyui_server_busy_seconds_total",
    "Time a ComfyUI server spent running jobs.",
    ["server"],
)
SERVER_IDLE_SECONDS = Counter(
    "comfyline_comfyui_server_idle_seconds_total",
    "Time a healthy ComfyUI server spent with nothing to run.",
    ["server"],
)
# --- prompt enhancer ---
ENHANCE_DURATION = Histogram(
    "comfyline_enhancer_duration_seconds",
    "Prompt enhancement latency, by strategy.",
    ["strategy"],
    buckets=_FAST_BUCKETS,
)
ENHANCE_FALLBACKS = Counter(
    "comfyline_enhancer_fallbacks_total",
    "Enhancements that fell back to a simpler strategy, by reason.",
    ["reason"],
)
# --- listeners (gateway) ---
LISTENERS = Gauge(
    "comfyline_listeners",
    "Clients following jobs, by transport (sse, websocket).",
    ["transport"],
)
# --- object store ---
S3_BYTES = Counter("comfyline_s3_bytes_total", "Bytes moved to or from S3.", ["direction"])
OUTPUTS_READ = Counter(
    "comfyline_worker_outputs_read_total",
    "Output files a worker read from ComfyUI, by where: its output folder, shared with the "
    "worker ('folder'), or its /view route ('view').",
    ["source"],
)
S3_ERRORS = Counter(
    "comfyline_s3_errors_total", "Failed S3 operations, by operation.", ["operation"]
)
# --- webhooks (orchestrator) ---
WEBHOOK_DELIVERIES = Counter(
    "comfyline_webhook_deliveries_total",
    "Webhook delivery attempts, by result (delivered, retrying, failed).",
    ["result"],
)


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus's text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class BusyClock:
    """Busy and idle seconds of one ComfyUI server, counted as its state changes."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._busy = False
        self._since = time.monotonic()
        SERVER_BUSY.labels(server).set(0)
        SERVER_BUSY_SECONDS.labels(server)
        SERVER_IDLE_SECONDS.labels(server)

    def set(self, busy: bool) -> None:
        """Record the time spent in the state that ends now, and enter ``busy``."""
        now = time.monotonic()
        counter = SERVER_BUSY_SECONDS if self._busy else SERVER_IDLE_SECONDS
        counter.labels(self.server).inc(now - self._since)
        self._busy, self._since = busy, now
        SERVER_BUSY.labels(self.server).set(int(busy))


@dataclass(slots=True)
class RunClock:
    """One attempt of a job on a worker: its queue wait when it starts, its run duration and
    outcome (``failed`` unless set otherwise) when it stops."""

    model: str
    started: float
    outcome: str = "failed"

    @classmethod
    def start(cls, delivery: Delivery, model: str) -> RunClock:
        """Observe how long the delivered work message waited in the queue, start the run."""
        stored = delivery.msg.metadata.timestamp
        if stored is not None:
            waited = (datetime.now(UTC) - stored).total_seconds()
            QUEUE_WAIT.labels(model).observe(max(0.0, waited))
        return cls(model, time.monotonic())

    def stop(self) -> None:
        """Observe the run's duration under its outcome."""
        RUN_DURATION.labels(self.model, self.outcome).observe(time.monotonic() - self.started)


async def serve_metrics(
    host: str, port: int, ready: Callable[[], bool] = lambda: True
) -> web.AppRunner:
    """Serve ``/metrics``, ``/healthz`` (the event loop answers) and ``/readyz`` (``ready()``)."""

    async def metrics(_: web.Request) -> web.Response:
        body, content_type = render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics served", extra={"url": f"http://{host}:{port}/metrics"})
    return runner


async def stop_metrics(runner: web.AppRunner | None) -> None:
    """Stop a server started by :func:`serve_metrics` (None: nothing to stop)."""
    if runner is not None:
        await asyncio.shield(runner.cleanup())
