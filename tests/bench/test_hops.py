"""The hop floor: one round trip to NATS and one to ComfyUI, after idle and back to back, each
figure from its own timings, and the report's lines for them."""

from __future__ import annotations

from pathlib import Path

import nats

from bench.hops import STREAM, run
from bench.report import rows
from comfyline.comfyui_sim import SimulatorProcess
from comfyline.runtime import NatsSettings


async def test_both_round_trips_are_timed_after_idle_and_back_to_back(
    nats_settings: NatsSettings, tmp_path: Path
) -> None:
    sim = SimulatorProcess(tmp_path / "sim").start()
    try:
        found = await run(nats_settings.url, sim.url, rounds=5, pause_s=0.01)
    finally:
        sim.cleanup()
    assert (found["rounds"], found["pause_s"]) == (5, 0.01)
    for key in ("jetstream_publish", "comfyui_get"):
        trip = found[key]
        assert trip["after_idle_ms"]["n"] == trip["back_to_back_ms"]["n"] == 5
        assert 0 < trip["back_to_back_ms"]["median"] < 1000
        assert 0 < trip["after_idle_ms"]["median"] < 1000
        wake = trip["after_idle_ms"]["median"] - trip["back_to_back_ms"]["median"]
        assert trip["wake_ms"] == wake
    lines = {r.figure: (r.value, r.baseline) for r in rows({"hop_floor": found})}
    publish = found["jetstream_publish"]
    assert lines["one hop after 10 ms idle: JetStream publish"] == (
        publish["after_idle_ms"]["median"],
        f"back to back {publish['back_to_back_ms']['median']:.2f} ms",
    )
    assert "one hop after 10 ms idle: GET ComfyUI" in lines


async def test_the_stream_it_publishes_to_is_gone_after(
    nats_settings: NatsSettings, tmp_path: Path
) -> None:
    sim = SimulatorProcess(tmp_path / "sim").start()
    try:
        await run(nats_settings.url, sim.url, rounds=1, pause_s=0.0)
    finally:
        sim.cleanup()
    nc = await nats.connect(nats_settings.url)
    try:
        names = await nc.jetstream().streams_info()
    finally:
        await nc.close()
    assert STREAM not in {info.config.name for info in names}
