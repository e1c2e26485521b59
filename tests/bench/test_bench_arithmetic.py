"""The bench's arithmetic: percentiles, the backlog window, busy time and idle gaps, how servers
are dealt to workers, and the verdict of each figure against its target. (The bench itself is
proven end to end by `python -m bench --tiny`, a step of .ci/run.)"""

from __future__ import annotations

import asyncio
import math

import pytest

from bench.busy import split
from bench.gateway import _rates_by_part, _status_and_headers
from bench.report import rows
from bench.stats import (
    Execution,
    backlog_window,
    busy_in,
    percentile,
    steady_rate,
    summary,
)


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(n) for n in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 90) == pytest.approx(90.1)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    assert summary([3.0, 1.0, 2.0]) == {"median": 2.0, "p90": 2.8, "p99": 2.98, "n": 3}


def _runs(*spans: tuple[float, float]) -> list[Execution]:
    return [Execution(f"p{n}", start, end) for n, (start, end) in enumerate(spans)]


def test_busy_time_and_gaps_inside_the_backlog_window() -> None:
    # Server A: back to back but for one 50 ms gap; server B starts late and stops early.
    a = _runs((0.0, 0.2), (0.2, 0.4), (0.45, 0.65), (0.65, 0.85), (0.85, 1.05))
    b = _runs((0.1, 0.3), (0.31, 0.51), (0.51, 0.71))
    start, end = backlog_window([a, b])
    assert (start, end) == (0.1, 0.71)  # all servers started .. the first ran dry
    busy_a = busy_in(a, start, end)
    assert busy_a.busy_fraction == pytest.approx((0.61 - 0.05) / 0.61)
    assert busy_a.gaps_s == pytest.approx([0.0, 0.05, 0.0])  # the last gap ends after `end`
    assert busy_a.jobs == 4
    busy_b = busy_in(b, start, end)
    assert busy_b.busy_fraction == pytest.approx(0.6 / 0.61)
    assert busy_b.gaps_s == pytest.approx([0.01, 0.0])


def test_a_gap_splits_into_the_wait_for_a_prompt_and_the_servers_own_start() -> None:
    # p1 queued 30 ms after p0 ended, started 10 ms later (its own); p2 queued during p1 but
    # started 20 ms after p1 ended (all its own); p3 queued long before.
    runs = [
        Execution("p0", 0.0, 0.2, queued=0.0),
        Execution("p1", 0.24, 0.44, queued=0.23),
        Execution("p2", 0.46, 0.66, queued=0.3),
        Execution("p3", 0.66, 0.86, queued=0.1),
    ]
    busy = busy_in(runs, 0.0, 0.86)
    assert busy.gaps_s == pytest.approx([0.04, 0.02, 0.0])
    assert busy.unfed_s == pytest.approx([0.03, 0.0, 0.0])
    assert busy.busy_fraction == pytest.approx(0.8 / 0.86)
    assert busy.fed_fraction == pytest.approx(1 - 0.03 / 0.86)
    # A server that does not say when prompts were queued gets gaps only.
    plain = busy_in(_runs((0.0, 0.2), (0.25, 0.45)), 0.0, 0.45)
    assert plain.unfed_s is None and plain.fed_fraction is None


def test_the_simulator_log_says_when_a_prompt_was_queued() -> None:
    raw = {"prompt_id": "p", "queued": 1.0, "started": 2.0, "ended": 3.0, "done": 3.1}
    assert Execution.parse(raw) == Execution("p", 2.0, 3.0, queued=1.0)
    old = {"prompt_id": "p", "started": 2.0, "ended": 3.0}
    assert Execution.parse(old).queued is None


def test_a_server_that_idles_the_whole_window_is_not_busy() -> None:
    a = _runs((0.0, 1.0))
    b = _runs((0.0, 0.1), (0.9, 1.0))
    start, end = backlog_window([a, b])
    assert busy_in(b, start, end).busy_fraction == pytest.approx(0.2)
    assert busy_in(b, start, end).gaps_s == pytest.approx([0.8])


def test_servers_are_dealt_to_workers_round_robin() -> None:
    urls = [f"u{n}" for n in range(5)]
    assert split(urls, 2) == [["u0", "u2", "u4"], ["u1", "u3"]]
    assert split(urls, 1) == [urls]
    assert split(["u0"], 4) == [["u0"]]  # never a worker without a server


def test_steady_rate_leaves_out_start_up_and_drain() -> None:
    # Two clients: a slow start (first completions at 1.0 s), then one job every 0.1 s, then a
    # slow drain (the last one at 9.0 s).
    ended = [1.0, 1.0] + [1.0 + 0.1 * n for n in range(1, 21)] + [8.0, 9.0]
    assert steady_rate(ended, 2) == pytest.approx(10.0)  # 20 completions from 1.0 s to 3.0 s
    assert steady_rate([1.0, 2.0, 3.0], 2) is None  # too few jobs to have a steady part


def test_rates_by_part_show_whether_the_rate_holds() -> None:
    stamps = [0.1 * n for n in range(1, 11)] + [1.0 + 0.2 * n for n in range(1, 11)]
    rates = _rates_by_part(0.0, stamps, 2)
    assert rates == pytest.approx([10.0, 5.0])
    assert _rates_by_part(0.0, [0.5], 5) == []


def test_raw_http_status_and_headers() -> None:
    async def parse() -> tuple[int, dict[str, str]]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nX-A:  b \r\n\r\n{}")
        return await _status_and_headers(reader)

    assert asyncio.run(parse()) == (202, {"content-length": "2", "x-a": "b"})


def test_verdicts_against_the_targets() -> None:
    seq = {
        "direct_ms": {"median": 15.0, "p90": 20.0, "p99": 30.0},
        "overhead_ms": {"median": 4.0, "p90": 9.0, "p99": 16.0},
    }
    results = {
        "overhead_simulator": seq,
        "throughput_200ms": {
            "ratio": 0.985,
            "direct_jobs_per_s": 5.0,
            "overall_ratio": 0.95,
            "overall_direct_jobs_per_s": 4.9,
        },
        "busy": {
            "k_1": {
                "servers": 1,
                "workers": 1,
                "busy_fraction": {"min": 0.98},
                "idle_gap_ms": {"median": 1.5, "p99": 3.0},
            }
        },
        "end_to_end": {
            "workers_1": {"comfyline_jobs_per_s": 150.0, "direct_jobs_per_s": 300.0},
            "workers_4": {"comfyline_jobs_per_s": 210.0, "direct_jobs_per_s": 900.0},
        },
        "gateway_submissions": {"accepted_per_s": 1400.0, "connections": 16},
        "sse_memory": {"baseline_rss_mb": 100.0, "streams_1000": {"kb_per_stream": 12.0}},
        "worker_memory": {"output_mb": 500.0, "rss_growth_mb": 51.0, "rss_before_mb": 80.0},
    }
    verdicts = {row.figure: row.met for row in rows(results)}
    assert verdicts == {
        "sequential overhead median (simulator)": True,
        "  overhead / direct job (simulator)": None,
        "sequential overhead p99 (simulator)": False,
        "8 clients, 200 ms jobs, steady": True,
        "8 clients, 200 ms jobs, whole rounds": None,
        "GPU busy, K=1 (least busy server)": False,
        "idle gap between jobs, K=1, median (p99)": True,
        "end to end, 1 worker(s), zero-delay": None,
        "end to end, 4 worker(s), zero-delay": True,
        "gateway alone, accepted submissions": False,
        "gateway memory per idle SSE stream, 1000 open": True,
        "worker RSS growth, 500 MB output to S3": False,
    }
    # a p99 met by the sides' difference (a noisy direct tail) but not by the pairs' is missed
    real = {**seq, "overhead_ms": {**seq["overhead_ms"], "p99": 10.0}}
    real["paired_difference_ms"] = {"median": 4.5, "p90": 12.0, "p99": 31.0}
    judged = {r.figure: (r.value, r.met) for r in rows({"overhead_real_comfyui": real})}
    assert judged == {
        "sequential overhead median (real comfyui)": (4.5, True),
        "  overhead / direct job (real comfyui)": (0.3, None),  # 4.5 ms over 15
        "sequential overhead p99 (real comfyui)": (31.0, False),
    }


def test_a_failed_part_is_a_missed_row_and_the_others_still_count() -> None:
    results = {
        "busy": {
            "k_1": {"error": "TimeoutError: no"},
            "k_4": {
                "servers": 4,
                "workers": 1,
                "busy_fraction": {"min": 0.995},
                "idle_gap_ms": {"median": 1.0, "p99": 2.0},
            },
        },
        "throughput_200ms": {"error": "HTTPStatusError: 503"},
    }
    verdicts = {row.figure: row.met for row in rows(results)}
    assert verdicts == {
        "GPU busy, K=4 (least busy server)": True,
        "idle gap between jobs, K=4, median (p99)": True,
        "busy.k_1: FAILED": False,
        "throughput_200ms: FAILED": False,
    }
