"""The package says what it offers, and offers what it says."""

from __future__ import annotations

import comfyline.orchestrator as orchestrator
import comfyline.testkit.orchestrator as testing


def test_every_export_exists() -> None:
    """Each name in ``__all__`` is defined, and ``__all__`` is sorted."""
    for module in (orchestrator, testing):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == []
        assert list(module.__all__) == sorted(module.__all__)


def test_the_core_api_is_exported() -> None:
    """What other services and tests use is in ``__all__``."""
    assert {"Orchestrator", "Settings", "JobStore", "UsageBook", "advance"} <= set(
        orchestrator.__all__
    )
