"""The contract committed in ``docs/contract`` is what the models say (CI fails otherwise)."""

from __future__ import annotations

from pathlib import Path

from comfyline.contracts.__main__ import documents, stale

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "contract"


def test_the_committed_contract_is_current() -> None:
    assert stale(COMMITTED) == [], "run: uv run python -m comfyline.contracts --out docs/contract"


def test_the_contract_has_every_message_and_the_asyncapi_document() -> None:
    files = documents()
    assert "asyncapi.json" in files
    for name in ("RunJob", "RunEvent", "JobEvent", "WorkerHeartbeat", "ModelTemplate"):
        assert f"schemas/{name}.json" in files
