"""The independent side-by-side check (``python -m bench.crosscheck``) works against a stack
started as users start it (with the one-server v2 proxy as a third side too), and refuses a
wrong picture."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bench.crosscheck import ORDERS, end_marker_note, png_check, run, sse_frames
from tests.e2e.conftest import Stack, stack  # noqa: F401 (``stack``: the e2e tests' fixture)

pytestmark = pytest.mark.e2e


def png(size: int, color: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), tuple(color.to_bytes(3, "big"))).save(out, "PNG")
    return out.getvalue()


def test_a_png_is_checked_for_its_size_and_colour() -> None:
    png_check(png(8, 0x12AB34), 8, 0x12AB34)
    with pytest.raises(AssertionError, match="first pixel"):
        png_check(png(8, 0x12AB34), 8, 0x12AB35)
    with pytest.raises(AssertionError, match="8x8"):
        png_check(png(8, 0x12AB34), 16, 0x12AB34)


def test_the_crosscheck_measures_both_paths_on_a_running_stack(
    stack: Stack,  # noqa: F811 (the fixture imported above)
) -> None:
    info = stack.up()
    out = run(info, jobs=6, size=64, warmup=1)
    assert out["jobs_per_side"] == 6 and out["size"] == 64
    for side in ("direct_ms", "comfyline_ms"):
        assert 0 < out[side]["median"] <= out[side]["p90"] <= out[side]["p99"]
    # Comfyline's path does the direct path's work and more.
    assert out["paired_difference_ms"]["median"] > 0
    # ComfyUI's end marker after execution_success: the simulator's /history race, 5 ms
    assert 3 <= out["direct_end_marker_gap_ms"] <= 100


def test_a_late_end_marker_is_pointed_out() -> None:
    assert end_marker_note(0.4) is None  # the real ComfyUI's
    note = end_marker_note(5.2)
    assert note is not None and "5.2 ms" in note and "--history-delay 0" in note


def test_server_sent_events_are_read_frame_by_frame() -> None:
    body = (
        b': keepalive\n\nevent: status\ndata: {"status":"running"}\n\n'
        b'event: output\r\ndata: {"url":"http://x/1"}\r\n\r\ndata: {"a":1}\n\n'
    )
    assert sse_frames(body) == [
        ("status", {"status": "running"}),
        ("output", {"url": "http://x/1"}),
        ("message", {"a": 1}),
    ]


def test_with_the_peer_every_side_takes_every_place_in_turn() -> None:
    sides = ["comfyline", "direct", "peer"]
    assert all(sorted(order) == sides for order in ORDERS)
    for place in range(3):
        assert sorted(order[place] for order in ORDERS) == sorted(sides * 2)


@pytest.mark.slow
def test_the_crosscheck_measures_the_peer_proxy_as_a_third_side(
    stack: Stack,  # noqa: F811 (the fixture imported above)
) -> None:
    """(Slow: the proxy's stream can stay silent for a job that ends before its own socket to
    ComfyUI is open, which the client waits out for a second.)"""
    info = stack.up()
    out = run(info, jobs=6, size=256, warmup=1, peer=True)
    assert out["jobs_per_side"] == 6
    for side in ("direct_ms", "comfyline_ms", "peer_ms"):
        assert 0 < out[side]["median"] <= out[side]["p90"] <= out[side]["p99"]
    assert "peer_paired_difference_ms" in out
