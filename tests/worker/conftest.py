"""Fixtures for the worker's cross-service tests: simulators, in-process workers, job helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.runtime import Bus, NatsSettings, ObjectStore, S3Settings

from .helpers import RunningWorker, RunWatch, start_worker


@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start simulators (``sim_factory("--step-time", "0.05")``); all stopped at the end."""
    started: list[SimulatorProcess] = []

    def make(*args: str, port: int | None = None) -> SimulatorProcess:
        sim = SimulatorProcess(tmp_path / f"sim{len(started)}", args=list(args), port=port)
        started.append(sim)
        return sim.start()

    yield make
    for sim in started:
        sim.cleanup()


@pytest.fixture
def sim(sim_factory: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    """One simulator with default knobs."""
    return sim_factory()


@pytest.fixture
async def workers(
    bus: Bus, store: ObjectStore, nats_settings: NatsSettings, s3_settings: S3Settings
) -> AsyncIterator[Callable[..., RunningWorker]]:
    """Start in-process workers (``workers([url], ack_wait_s=3)``); all stopped at the end."""
    running: list[RunningWorker] = []

    def make(urls: list[str], **overrides: Any) -> RunningWorker:
        worker = start_worker(bus, store, nats_settings, s3_settings, urls, **overrides)
        running.append(worker)
        return worker

    yield make
    for worker in running:
        await worker.stop()


@pytest.fixture
async def runs(bus: Bus) -> AsyncIterator[RunWatch]:
    """Every run event of this test's namespace, as it arrives."""
    watch = RunWatch(bus)
    await watch.start()
    yield watch
    await watch.stop()
