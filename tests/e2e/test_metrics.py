"""Every service's ``/metrics``, scraped as Prometheus would while one job goes through."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Stack

pytestmark = pytest.mark.e2e
MODEL = "cpu-smoke"
SERVICES = {"gateway", "orchestrator", "enhancer", "worker"}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``(sample name, labels) -> value`` of one scrape (no key is sent)."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """A sample's value (0 when it is absent, as Prometheus treats a counter not yet seen)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def submit_and_watch_the_queue(client: httpx.Client, gateway: str, before: Samples) -> str:
    """Submit one job: the gateway counts it, and the queue gauges see it wait."""
    created = client.post("/v1/jobs", json={"model": MODEL, "input": {"width": 64, "height": 64}})
    assert created.status_code == 202, created.text
    submitted = value(before, "comfyline_jobs_submitted_total", model=MODEL)
    assert value(scrape(gateway), "comfyline_jobs_submitted_total", model=MODEL) == submitted + 1
    eventually(
        lambda: (
            value(scrape(gateway), "comfyline_queue_depth", model=MODEL, lane="interactive") == 1
        ),
        "the queue-depth gauge to count the waiting job",
    )
    time.sleep(1.2)
    age = value(
        scrape(gateway), "comfyline_queue_oldest_age_seconds", model=MODEL, lane="interactive"
    )
    assert age >= 1.0, age
    return str(created.json()["id"])


def test_every_service_exports_metrics_that_follow_a_job(stack: Stack) -> None:
    info = stack.up()
    urls: dict[str, str] = info["metrics_urls"]
    assert set(urls) >= SERVICES, urls
    assert info["gateway_url"] and info["api_key"]  # kept beside the new field
    before = {name: scrape(url) for name, url in urls.items()}
    for name, url in urls.items():
        text = httpx.get(url, timeout=10).text
        assert "# TYPE comfyline_jobs_finished_total counter" in text, name
        assert "# TYPE comfyline_queue_depth gauge" in text, name
        if name != "gateway":  # probes beside /metrics on the service's own port
            root = urls[name].removesuffix("/metrics")
            assert httpx.get(f"{root}/healthz", timeout=5).status_code == 200
            assert httpx.get(f"{root}/readyz", timeout=5).status_code == 200

    gateway = urls["gateway"]
    assert value(scrape(gateway), "comfyline_queue_depth", model=MODEL, lane="interactive") == 0
    auth = {"Authorization": f"Bearer {info['api_key']}"}
    with httpx.Client(base_url=info["gateway_url"], headers=auth, timeout=30) as client:
        # With the worker frozen, the job waits in its work queue where the gauges see it.
        worker_pid = info["pids"]["worker"]
        os.kill(worker_pid, signal.SIGSTOP)
        try:
            job_id = submit_and_watch_the_queue(client, gateway, before["gateway"])
        finally:
            os.kill(worker_pid, signal.SIGCONT)
        eventually(
            lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded",
            "the job to succeed",
        )

    finished = ("comfyline_jobs_finished_total",)
    eventually(
        lambda: (
            value(
                scrape(urls["orchestrator"]), *finished, model=MODEL, outcome="succeeded", code=""
            )
            == value(before["orchestrator"], *finished, model=MODEL, outcome="succeeded", code="")
            + 1
        ),
        "the orchestrator to count the finished job",
    )
    orchestrator = scrape(urls["orchestrator"])
    assert (
        value(
            orchestrator, "comfyline_job_duration_seconds_count", model=MODEL, outcome="succeeded"
        )
        >= 1
    )
    eventually(
        lambda: (
            value(scrape(gateway), "comfyline_queue_depth", model=MODEL, lane="interactive") == 0
        ),
        "the queue to empty",
    )

    worker = scrape(urls["worker"])
    assert (
        value(worker, "comfyline_run_duration_seconds_count", model=MODEL, outcome="succeeded") == 1
    )
    assert value(worker, "comfyline_queue_wait_seconds_count", model=MODEL) == 1
    # The job waited at least as long as the worker was frozen.
    assert value(worker, "comfyline_queue_wait_seconds_sum", model=MODEL) >= 1.0
    busy = {
        dict(labels)["server"]: v
        for (name, labels), v in worker.items()
        if name == "comfyline_comfyui_server_busy_seconds_total"
    }
    assert len(busy) == 1 and next(iter(busy.values())) > 0, busy
    server = next(iter(busy))
    assert value(worker, "comfyline_comfyui_server_busy", server=server) == 0
    assert value(worker, "comfyline_comfyui_server_idle_seconds_total", server=server) > 0
    assert value(worker, "comfyline_s3_bytes_total", direction="upload") > 0
