"""Which event loop a service runs on; its heap settled once started."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
import uvloop

from comfyline.runtime.lifecycle import loop_factory, run, settle_heap


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
    frozen: list[int] = []

    async def main(stop: asyncio.Event) -> None:
        seen.append(asyncio.get_running_loop())
        frozen.append(gc.get_freeze_count())

    gc.unfreeze()
    try:
        run(main)
    finally:
        gc.unfreeze()
    assert loop_factory() is factory
    assert isinstance(seen[0], uvloop.Loop) is on_uvloop
    assert frozen[0] > 0  # the imports' objects, before the service's main runs


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only a collection frees it


def test_settling_the_heap_collects_what_is_garbage_and_keeps_the_rest_out_of_collections() -> None:
    garbage, kept = Node(), Node()
    dead, alive = weakref.ref(garbage), weakref.ref(kept)
    del garbage
    gc.unfreeze()
    try:
        settle_heap()
        assert dead() is None  # collected, not frozen
        assert gc.get_freeze_count() > 0
        del kept
        gc.collect()
        assert alive() is not None  # frozen: a full collection no longer looks at it
    finally:
        gc.unfreeze()
    gc.collect()
    assert alive() is None
