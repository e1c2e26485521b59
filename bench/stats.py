"""Pure arithmetic of the bench: percentiles, paired differences, busy time and idle gaps."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between the closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99 and count of ``values`` (already in the unit to report)."""
    return {
        "median": statistics.median(values) if values else math.nan,
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "n": len(values),
    }


@dataclass(frozen=True)
class Execution:
    """One prompt as a ComfyUI server ran it (epoch seconds, from the server's own clock)."""

    prompt_id: str
    started: float
    ended: float

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Execution:
        return cls(str(raw["prompt_id"]), float(raw["started"]), float(raw["ended"]))


@dataclass(frozen=True)
class ServerBusy:
    """How one server spent the backlog window."""

    jobs: int
    busy_fraction: float
    gaps_s: list[float]


def backlog_window(servers: Sequence[Sequence[Execution]]) -> tuple[float, float]:
    """From the moment every server has started its first prompt to the moment the first server
    ends its last one: the span in which each had work waiting for it (the backlog was
    submitted before any worker ran)."""
    active = [runs for runs in servers if runs]
    start = max(min(r.started for r in runs) for runs in active)
    end = min(max(r.ended for r in runs) for runs in active)
    return start, end


def busy_in(runs: Iterable[Execution], start: float, end: float) -> ServerBusy:
    """Busy fraction of ``[start, end]`` and the gaps between one prompt's end and the next
    one's start that lie inside it."""
    ordered = sorted(runs, key=lambda r: r.started)
    span = max(end - start, 1e-9)
    busy = sum(max(0.0, min(r.ended, end) - max(r.started, start)) for r in ordered)
    gaps = [
        b.started - a.ended
        for a, b in itertools.pairwise(ordered)
        if a.ended >= start and b.started <= end
    ]
    inside = sum(1 for r in ordered if r.ended > start and r.started < end)
    return ServerBusy(jobs=inside, busy_fraction=min(1.0, busy / span), gaps_s=gaps)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def steady_rate(ended: Sequence[float], clients: int) -> float | None:
    """Completions per second between the ``clients``-th completion and the ``clients``-th from
    last (every client had a job in flight then); None when too few jobs ran to tell."""
    ordered = sorted(ended)
    inside = len(ordered) - 2 * clients
    if clients < 1 or inside < clients:
        return None
    first, last = ordered[clients - 1], ordered[-clients - 1]
    return inside / max(last - first, 1e-9)
