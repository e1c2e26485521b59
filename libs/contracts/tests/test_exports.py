"""Each library's ``__all__`` names exactly what it offers (and everything in it exists)."""

from __future__ import annotations

import importlib

import pytest

from comfyline.contracts import id_timestamp_ms, new_job_id


@pytest.mark.parametrize(
    "module", ["comfyline.contracts", "comfyline.runtime", "comfyline.catalogue"]
)
def test_all_lists_only_real_public_names(module: str) -> None:
    mod = importlib.import_module(module)
    exported = mod.__all__
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    for name in exported:
        assert hasattr(mod, name), name
    public = {n for n in vars(mod) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(mod, n)).__name__ == "module"}
    assert public - submodules - {"annotations"} == set(exported)


def test_job_ids_sort_by_time_and_carry_it() -> None:
    early, late = new_job_id(now_ms=1_700_000_000_000), new_job_id(now_ms=1_700_000_000_001)
    assert early < late
    assert id_timestamp_ms(early) == 1_700_000_000_000
    assert len({new_job_id() for _ in range(1000)}) == 1000
