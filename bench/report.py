"""The bench's verdict: every figure beside its target, as printed and as written to JSON."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    figure: str
    value: float
    unit: str
    baseline: str
    target: str
    met: bool | None  # None: recorded, no target

    def line(self) -> str:
        verdict = {True: "met", False: "MISSED", None: "-"}[self.met]
        value = "n/a" if math.isnan(self.value) else f"{self.value:,.2f} {self.unit}"
        return f"  {self.figure:<46} {value:>16}  {self.baseline:<26} {self.target:<16} {verdict}"


def _get(results: dict[str, Any], *path: str) -> Any:
    """The part at ``path``, or None when it is missing or failed (failures have their own row)."""
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return None if isinstance(node, dict) and "error" in node else node


def _failures(results: dict[str, Any], prefix: str = "") -> list[Row]:
    failed = []
    for key, part in results.items():
        if isinstance(part, dict) and "error" in part:
            error = part["error"][:26]
            failed.append(Row(f"{prefix}{key}: FAILED", math.nan, "", error, "", False))
        elif isinstance(part, dict) and key == "busy":
            failed += _failures(part, "busy.")
    return failed


def rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for where in ("simulator", "real_comfyui"):
        seq = _get(results, f"overhead_{where}")
        if seq:
            d = seq["direct_ms"]
            paired = seq.get("paired_difference_ms", {})
            for q, limit in (("median", 5.0), ("p99", 15.0)):
                # Judged on the larger of the sides' difference and the pairs' own: a noisy
                # direct tail must not make Comfyline's look small.
                over = max(seq["overhead_ms"][q], paired.get(q, -math.inf))
                base = f"direct {d[q]:.1f} ms" + (f", pairs {paired[q]:.1f}" if q in paired else "")
                out.append(
                    Row(
                        f"sequential overhead {q} ({where.replace('_', ' ')})",
                        over,
                        "ms",
                        base,
                        f"<= {limit:.0f} ms",
                        over <= limit,
                    )
                )
                if q == "median" and d[q] > 0:
                    # The figure that holds from one minute to the next on a shared machine,
                    # whose speed moves both sides together.
                    out.append(
                        Row(
                            f"  overhead / direct job ({where.replace('_', ' ')})",
                            over / d[q],
                            "x",
                            f"direct {d[q]:.1f} ms",
                            "",
                            None,
                        )
                    )
    view = _get(results, "overhead_simulator_view")
    if view:  # no target of its own: what a worker on another host than its ComfyUI adds
        d, paired = view["direct_ms"], view.get("paired_difference_ms", {})
        over = max(view["overhead_ms"]["median"], paired.get("median", -math.inf))
        out.append(
            Row(
                "same, outputs through /view (simulator)",
                over,
                "ms",
                f"direct {d['median']:.1f} ms",
                "",
                None,
            )
        )
    sparse = _get(results, "overhead_sparse_simulator")
    if sparse:
        d, over = sparse["direct_ms"], sparse["overhead_ms"]
        label = f"sparse overhead {{}} ({sparse['pause_s']:g} s apart, simulator)"
        out.append(
            Row(
                label.format("median"),
                over["median"],
                "ms",
                f"direct {d['median']:.1f} ms",
                "<= 5 ms",
                over["median"] <= 5.0,
            )
        )
        out.append(
            Row(label.format("p90"), over["p90"], "ms", f"direct {d['p90']:.1f} ms", "", None)
        )
    floor = _get(results, "hop_floor")
    if floor:  # no target: the price of one hop on this machine, which each hop of a job pays
        idle = f"{floor['pause_s'] * 1000:g} ms"
        trips = (("jetstream_publish", "JetStream publish"), ("comfyui_get", "GET ComfyUI"))
        for key, label in trips:
            trip = floor[key]
            out.append(
                Row(
                    f"one hop after {idle} idle: {label}",
                    trip["after_idle_ms"]["median"],
                    "ms",
                    f"back to back {trip['back_to_back_ms']['median']:.2f} ms",
                    "",
                    None,
                )
            )
    throughputs: list[tuple[str, str, float | None]] = [
        ("throughput_simulator", "8 clients, zero-delay simulator", None),
        ("throughput_200ms", "8 clients, 200 ms jobs", 0.98),
        ("throughput_real_comfyui", "8 clients, real ComfyUI (CPU)", None),
    ]
    for key, label, floor in throughputs:
        tp = _get(results, key)
        if tp:
            out.append(
                Row(
                    label + ", steady",
                    tp["ratio"],
                    "x direct",
                    f"direct {tp['direct_jobs_per_s']:.1f} jobs/s",
                    f">= {floor:.2f}x" if floor else "close to 1.0x",
                    tp["ratio"] >= floor if floor else None,
                )
            )
            if "overall_ratio" in tp:
                out.append(
                    Row(
                        label + ", whole rounds",
                        tp["overall_ratio"],
                        "x direct",
                        f"direct {tp['overall_direct_jobs_per_s']:.1f} jobs/s",
                        "",
                        None,
                    )
                )
    measured = [b for b in (_get(results, "busy") or {}).values() if "error" not in b]
    for busy in sorted(measured, key=lambda b: b["servers"]):
        k = busy["servers"]
        out.append(
            Row(
                f"GPU busy, K={k} (least busy server)",
                busy["busy_fraction"]["min"] * 100,
                "%",
                f"{busy['workers']} worker(s), 200 ms jobs",
                ">= 99 %",
                busy["busy_fraction"]["min"] >= 0.99,
            )
        )
        if "fed_fraction" in busy:
            unfed = busy["idle_gap_unfed_ms"]
            out.append(
                Row(
                    f"busy or with a prompt queued, K={k} (least)",
                    busy["fed_fraction"]["min"] * 100,
                    "%",
                    f"no prompt queued: p99 {unfed['p99']:.1f} ms",
                    "",
                    None,
                )
            )
        gap = busy["idle_gap_ms"]
        out.append(
            Row(
                f"idle gap between jobs, K={k}, median (p99)",
                gap["median"],
                "ms",
                f"p99 {gap['p99']:.1f} ms",
                "<= 2 ms",
                gap["median"] <= 2.0,
            )
        )
    e2e = _get(results, "end_to_end") or {}
    counts = sorted(int(k.split("_")[1]) for k in e2e if k.startswith("workers_"))
    for count in counts:
        row = e2e[f"workers_{count}"]
        last = count == counts[-1]
        out.append(
            Row(
                f"end to end, {count} worker(s), zero-delay",
                row["comfyline_jobs_per_s"],
                "jobs/s",
                f"direct {row['direct_jobs_per_s']:.0f} jobs/s",
                ">= 200 jobs/s" if last else "",
                row["comfyline_jobs_per_s"] >= 200 if last else None,
            )
        )
    subs = _get(results, "gateway_submissions")
    if subs:
        out.append(
            Row(
                "gateway alone, accepted submissions",
                subs["accepted_per_s"],
                "/s",
                f"{subs['connections']} connections",
                ">= 1,500 /s",
                subs["accepted_per_s"] >= 1500,
            )
        )
    sse = _get(results, "sse_memory") or {}
    for key, step in sse.items():
        if key.startswith("streams_"):
            out.append(
                Row(
                    f"gateway memory per idle SSE stream, {key[8:]} open",
                    step["kb_per_stream"],
                    "KB",
                    f"baseline {sse['baseline_rss_mb']:.0f} MB",
                    "<= 30 KB",
                    step["kb_per_stream"] <= 30,
                )
            )
    mem = _get(results, "worker_memory")
    if mem:
        out.append(
            Row(
                f"worker RSS growth, {mem['output_mb']:.0f} MB output to S3",
                mem["rss_growth_mb"],
                "MB",
                f"before {mem['rss_before_mb']:.0f} MB",
                "<= 50 MB",
                mem["rss_growth_mb"] <= 50,
            )
        )
    return out + _failures(results)


def table(results: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    found = rows(results)
    header = f"  {'figure':<46} {'value':>16}  {'baseline (same run)':<26} {'target':<16} verdict"
    text = "\n".join([header, "  " + "-" * (len(header) - 2), *(r.line() for r in found)])
    return text, [asdict(r) for r in found]


def machine() -> dict[str, Any]:
    """The machine and commit a run was made on."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "git_commit": commit,
    }
