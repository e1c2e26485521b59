"""Fixtures: an orchestrator running in-process against the session's real NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from comfyline.catalogue import Catalogue
from comfyline.contracts import Deadlines
from comfyline.orchestrator import Orchestrator, Settings
from comfyline.runtime import Bus, NatsSettings
from comfyline.testkit.orchestrator import quick_settings, sample_template


@pytest.fixture
def catalogue() -> Catalogue:
    """The built-in models plus test ones: ``tti-test`` and ``tti-short`` (1 s deadlines)."""
    short = sample_template("tti-short", deadlines=Deadlines(queue_s=1, run_s=1))
    plain = sample_template("tti-plain", enhance=False)
    return Catalogue([*Catalogue.builtin(), sample_template(), short, plain])


@pytest.fixture
def settings(nats_settings: NatsSettings, namespace: str) -> Settings:
    """Quick settings in this test's namespace."""
    return quick_settings(nats_settings, namespace)


@pytest.fixture
async def orchestrator(
    bus: Bus, catalogue: Catalogue, settings: Settings
) -> AsyncIterator[Orchestrator]:
    """One orchestrator, started; stopped at the end of the test."""
    async with Orchestrator(bus, catalogue, settings) as running:
        yield running
