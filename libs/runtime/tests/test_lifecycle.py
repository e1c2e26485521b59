"""Which event loop a service runs on."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from comfyline.runtime.lifecycle import loop_factory, run


@pytest.mark.parametrize(
    ("choice", "factory", "on_uvloop"),
    [
        (None, uvloop.new_event_loop, True),
        ("uvloop", uvloop.new_event_loop, True),
        ("asyncio", None, False),
    ],
)
def test_the_service_loop_is_uvloop_unless_the_standard_one_is_chosen(
    monkeypatch: pytest.MonkeyPatch, choice: str | None, factory: object, on_uvloop: bool
) -> None:
    if choice is None:
        monkeypatch.delenv("COMFYLINE_EVENT_LOOP", raising=False)
    else:
        monkeypatch.setenv("COMFYLINE_EVENT_LOOP", choice)
    seen: list[asyncio.AbstractEventLoop] = []

    async def main(stop: asyncio.Event) -> None:
        seen.append(asyncio.get_running_loop())

    run(main)
    assert loop_factory() is factory
    assert isinstance(seen[0], uvloop.Loop) is on_uvloop
