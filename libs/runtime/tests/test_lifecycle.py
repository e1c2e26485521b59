"""Which event loop a service runs on."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from comfyline.runtime.lifecycle import loop_factory, run


def test_services_run_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMFYLINE_EVENT_LOOP", raising=False)
    seen: list[asyncio.AbstractEventLoop] = []

    async def main(stop: asyncio.Event) -> None:
        seen.append(asyncio.get_running_loop())

    run(main)
    assert loop_factory() is uvloop.new_event_loop
    assert isinstance(seen[0], uvloop.Loop)


def test_the_standard_loop_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYLINE_EVENT_LOOP", "asyncio")
    seen: list[asyncio.AbstractEventLoop] = []

    async def main(stop: asyncio.Event) -> None:
        seen.append(asyncio.get_running_loop())

    run(main)
    assert loop_factory() is None
    assert not isinstance(seen[0], uvloop.Loop)
