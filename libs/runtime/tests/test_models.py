"""A model published to the ``models`` bucket reaches every service's catalogue, no redeploy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from comfyline.catalogue import Catalogue
from comfyline.runtime import Bus, LiveCatalogue


async def _until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not reached in time")


async def test_published_models_appear_and_newer_versions_win(bus: Bus) -> None:
    builtin = Catalogue.builtin()
    live = LiveCatalogue(bus, builtin, refresh_s=0.1)
    await live.start()
    try:
        assert live.names() == builtin.names()
        kv = await bus.kv(bus.names.bucket("models"))

        smoke = builtin.get("cpu-smoke")
        added = smoke.model_copy(update={"name": "cpu-smoke-wide", "title": "Wide smoke"})
        await kv.put("cpu-smoke-wide", added.to_bytes())
        newer = smoke.model_copy(update={"version": smoke.version + 1, "title": "Smoke v2"})
        await kv.put("cpu-smoke", newer.to_bytes())
        await kv.put("broken", b"{not json")

        await _until(lambda: "cpu-smoke-wide" in live)
        assert live.get("cpu-smoke-wide").title == "Wide smoke"
        await _until(lambda: live.get("cpu-smoke").version == smoke.version + 1)
        assert live.get("cpu-smoke").title == "Smoke v2"
        # jobs recorded with the older version still render the version they ran
        assert live.get("cpu-smoke", smoke.version).title == smoke.title
        assert "broken" not in live
        assert len(live) == len(builtin) + 1
    finally:
        await live.stop()


async def test_an_unreadable_bucket_keeps_the_last_good_catalogue(bus: Bus) -> None:
    live = LiveCatalogue(bus, Catalogue.builtin(), refresh_s=60)
    await live.start()
    await live.stop()
    await bus.js.delete_key_value(bus.names.bucket("models"))
    bus._kv.clear()
    await live.refresh()
    assert "cpu-smoke" in live and len(live) == len(Catalogue.builtin())
