"""The catalogue is published to the ``models`` bucket at start, once per change."""

from __future__ import annotations

from comfyline.catalogue import Catalogue
from comfyline.contracts import ModelTemplate
from comfyline.orchestrator import Orchestrator
from comfyline.orchestrator.topology import publish_catalogue
from comfyline.runtime import Bus
from comfyline.testkit.orchestrator import sample_template


async def test_each_model_is_published_under_its_name(
    bus: Bus, orchestrator: Orchestrator, catalogue: Catalogue
) -> None:
    """Every model's latest template is in ``models``; publishing again writes nothing."""
    kv = await bus.kv(bus.names.bucket("models"))
    for template in catalogue:
        entry = await kv.get(template.name)
        assert entry.value is not None
        assert ModelTemplate.from_bytes(entry.value) == template
    assert await publish_catalogue(bus, catalogue) == 0


async def test_a_newer_version_is_not_overwritten_by_an_older_one(bus: Bus) -> None:
    """Two deployments side by side during a rollout: the newer template stays."""
    newer = sample_template(version=2, title="v2")
    assert await publish_catalogue(bus, Catalogue([newer])) == 1
    assert await publish_catalogue(bus, Catalogue([sample_template()])) == 0
    kv = await bus.kv(bus.names.bucket("models"))
    entry = await kv.get("tti-test")
    assert ModelTemplate.from_bytes(entry.value or b"").version == 2
