"""Comfyline on a 3-node NATS JetStream cluster loses a node and nothing else.

Three nats-server processes on loopback (each its own ports and store, routes to the others)
form one cluster; ``comfyline up --nats-url <the three> --nats-replicas 3`` runs the stack on it,
so every stream and KV bucket has three replicas. During a run of 200 jobs the node leading the
``JOBS`` stream is SIGKILLed and stays down: every job must still end ``succeeded``, with its
output, and with exactly one terminal event on ``JOBS``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from comfyline.stack import NatsCluster, free_port

from .conftest import Stack
from .jobs import (
    TERMINAL,
    assert_each_succeeded_once,
    outcome,
    settled_terminal_events,
    stack_info,
    submit,
    wait_all,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(900)]

JOBS = 200


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "nats") as running:
        yield running


@pytest.fixture
def stack(tmp_path: Path, cluster: NatsCluster) -> Iterator[Stack]:
    running = Stack(
        tmp_path / "state",
        free_port(),
        ["--nats-url", cluster.urls, "--nats-replicas", "3"],
    )
    # Each job takes at least 200 ms on the "GPU", so the node is lost while jobs are running.
    running.env["COMFYLINE_SIM_ARGS"] = "--node-delay EmptyImage=0.2"
    running.up()
    try:
        yield running
    finally:
        running.down()


def _replicas(urls: list[str]) -> dict[str, Any]:
    """Each stream's replica count and leader (KV buckets are the ``KV_`` streams)."""

    async def read() -> dict[str, Any]:
        nc = await nats.connect(servers=urls)
        try:
            found: dict[str, Any] = {}
            for info in await nc.jetstream().streams_info():
                leader = info.cluster.leader if info.cluster else None
                found[str(info.config.name)] = (info.config.num_replicas, leader)
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def _wait_for_some_ended(client: httpx.Client, ids: list[str]) -> int:
    """How many of ``ids`` have ended, once at least one has (jobs are flowing)."""
    deadline = time.monotonic() + 60
    while True:
        ended = sum(client.get(f"/v1/jobs/{job_id}").json()["status"] in TERMINAL for job_id in ids)
        if ended or time.monotonic() > deadline:
            return ended
        time.sleep(0.5)


def test_a_nats_node_killed_during_200_jobs_loses_no_job_and_doubles_none(
    stack: Stack, cluster: NatsCluster
) -> None:
    info = stack_info(stack)
    assert info["nats_urls"] == cluster.urls.split(",") and info["nats_replicas"] == 3
    streams = _replicas(info["nats_urls"])
    assert {"JOBS", "RUNS", "WORK", "TIMERS", "KV_jobs", "KV_workers", "KV_idempotency"} <= set(
        streams
    )
    assert all(replicas == 3 for replicas, _ in streams.values()), streams
    victim = cluster.node(streams["JOBS"][1])  # the node leading JOBS
    auth = {"Authorization": f"Bearer {info['api_key']}"}
    started = time.monotonic()
    with httpx.Client(base_url=info["gateway_url"], headers=auth, timeout=30) as client:
        ids = submit(client, JOBS // 2, "cluster")
        ended_before = _wait_for_some_ended(client, ids)
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic() - started
        # A client retries what failed while the cluster chose new leaders, with the same key.
        ids += submit(client, JOBS // 2, "cluster-after", retry_s=60)
        ended = wait_all(client, ids, timeout_s=600)
    took = time.monotonic() - started
    assert not victim.child.alive()
    survivors = [node.url for node in cluster.nodes if node is not victim]
    terminal = settled_terminal_events(survivors, ids, timeout_s=90)
    figures = outcome(ids, ended, terminal, took)
    figures |= {"killed": victim.name, "killed_at_s": round(killed_at, 1)}
    print(f"\ncluster node lost: {figures}")
    # The node went down mid-run: some jobs had ended, others had not.
    assert 0 < ended_before < JOBS // 2, figures
    assert_each_succeeded_once(ids, ended, terminal, figures)
    # The streams still have their leader on a node that is up.
    after = _replicas(survivors)
    assert after["JOBS"][1] != victim.name and after["JOBS"][1] is not None
