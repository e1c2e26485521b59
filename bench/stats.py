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
    """One prompt as a ComfyUI server ran it (epoch seconds, from the server's own clock):
    when it was queued (None where the server does not say), started and ended."""

    prompt_id: str
    started: float
    ended: float
    queued: float | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Execution:
        queued = raw.get("queued")
        return cls(
            str(raw["prompt_id"]),
            float(raw["started"]),
            float(raw["ended"]),
            float(queued) if queued is not None else None,
        )


@dataclass(frozen=True)
class ServerBusy:
    """How one server spent the backlog window. Each gap splits in two where the server says
    when prompts were queued: ``unfed_s``, the part before the next prompt was queued (the
    server had nothing to run: the dispatcher's), and the rest, the server's own (a prompt
    was waiting in its queue: on a CPU shared by many simulated servers and every service,
    the server's thread waking late)."""

    jobs: int
    busy_fraction: float
    gaps_s: list[float]
    unfed_s: list[float] | None = None
    fed_fraction: float | None = None  # busy, or with a prompt queued


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
    one's start that lie inside it, each with its part before the next prompt was queued."""
    ordered = sorted(runs, key=lambda r: r.started)
    span = max(end - start, 1e-9)
    busy = sum(max(0.0, min(r.ended, end) - max(r.started, start)) for r in ordered)
    pairs = [
        (a, b) for a, b in itertools.pairwise(ordered) if a.ended >= start and b.started <= end
    ]
    gaps = [b.started - a.ended for a, b in pairs]
    unfed = None
    if all(b.queued is not None for _, b in pairs):
        unfed = [
            min(max(0.0, b.started - a.ended), max(0.0, (b.queued or 0.0) - a.ended))
            for a, b in pairs
        ]
    inside = sum(1 for r in ordered if r.ended > start and r.started < end)
    fed = None if unfed is None else max(0.0, 1.0 - sum(unfed) / span)
    return ServerBusy(inside, min(1.0, busy / span), gaps, unfed, fed)


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
