"""Submitting many jobs to a running stack and checking how each ended (the fault tests')."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import nats
from nats.js.errors import NoKeysError

from comfyline.contracts import ActiveJobs, EndedJobs, jobs_not_ended

from .conftest import Stack

T = TypeVar("T")
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


def stack_info(stack: Stack) -> dict[str, Any]:
    """``stack.json`` as it is now (PIDs change when the stack restarts a part)."""
    info: dict[str, Any] = json.loads((stack.state_dir / "stack.json").read_text())
    return info


def submit(client: httpx.Client, n: int, tag: str, retry_s: float = 0.0) -> list[str]:
    """Submit ``n`` small cpu-smoke jobs; an answer of 503 or a dropped connection is retried
    for up to ``retry_s`` with the same ``Idempotency-Key``, as a client should."""
    ids = []
    for i in range(n):
        body = {
            "model": "cpu-smoke",
            "input": {"width": 64, "height": 64, "color": (i * 7919) % 0xFFFFFF},
            "metadata": {"fault": tag},
        }
        headers = {"Idempotency-Key": f"{tag}-{i}"}
        give_up = time.monotonic() + retry_s
        while True:
            try:
                answer = client.post("/v1/jobs", json=body, headers=headers)
            except httpx.TransportError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.5)
                continue
            if answer.status_code == 503 and time.monotonic() < give_up:
                time.sleep(0.5)
                continue
            break
        assert answer.status_code in (200, 202), answer.text
        ids.append(answer.json()["id"])
    return ids


def wait_all(client: httpx.Client, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
    """Each job once it has ended, in the order of ``ids``; fails naming jobs that never ended."""
    deadline = time.monotonic() + timeout_s
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(ids) and time.monotonic() < deadline:
        for job_id in ids:
            if job_id in done:
                continue
            try:
                job = client.get(f"/v1/jobs/{job_id}")
            except httpx.HTTPError:
                continue  # the gateway may be reconnecting
            if job.status_code == 200 and job.json()["status"] in TERMINAL:
                done[job_id] = job.json()
        time.sleep(0.5)
    missing = [j for j in ids if j not in done]
    assert not missing, f"{len(missing)} jobs never ended, e.g. {missing[:3]}"
    return [done[j] for j in ids]


def terminal_events(nats_urls: list[str], ids: list[str]) -> Counter[str]:
    """How many terminal events each job has on JOBS (from the server's subject index)."""

    async def count() -> Counter[str]:
        nc = await nats.connect(servers=nats_urls)
        try:
            js = nc.jetstream()
            found: Counter[str] = Counter()
            for kind in ("completed", "failed", "cancelled", "timed_out"):
                info = await js.stream_info("JOBS", subjects_filter=f"jobs.*.*.{kind}")
                for subject, n in (info.state.subjects or {}).items():
                    found[subject.split(".")[2]] += int(n)
            return Counter({j: found[j] for j in ids})
        finally:
            await nc.close()

    return asyncio.run(count())


def polled(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float) -> T:
    """``read()`` every 0.5 s until ``done`` says its value is final, or after ``timeout_s``;
    the last value either way (the caller's assertion shows it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def settled_terminal_events(nats_urls: list[str], ids: list[str], timeout_s: float) -> Counter[str]:
    """:func:`terminal_events` once every job has one, or after ``timeout_s``.

    A job's record can say it ended before its terminal event is out: when the orchestrator
    dies between writing the record and publishing the event, the run event that ended the job
    comes back after the consumer's AckWait (30 s) and the event is published then.
    """
    return polled(
        lambda: terminal_events(nats_urls, ids), lambda found: all(found[j] for j in ids), timeout_s
    )


def slots_held(nats_urls: list[str]) -> dict[str, int]:
    """Each owner's active-job slots held: its accepted jobs (``active.<owner>`` in the
    ``usage`` bucket) less its ended ones (``ended.<owner>``)."""

    async def read() -> dict[str, int]:
        nc = await nats.connect(servers=nats_urls)
        try:
            kv = await nc.jetstream().key_value("usage")
            try:
                keys = await kv.keys()
            except NoKeysError:
                keys = []
            counts: dict[str, bytes] = {}
            for key in (k for k in keys if k.startswith(("active.", "ended."))):
                counts[key] = (await kv.get(key)).value or b"{}"
            held = {}
            for key, raw in counts.items():
                if key.startswith("active."):
                    owner = key.removeprefix("active.")
                    ended = counts.get(f"ended.{owner}")
                    held[key] = jobs_not_ended(
                        ActiveJobs.from_bytes(raw), EndedJobs.from_bytes(ended) if ended else None
                    )
            return held
        finally:
            await nc.close()

    return asyncio.run(read())


def wait_slots_released(nats_urls: list[str], timeout_s: float) -> dict[str, int]:
    """The slots still held once every owner's count is back to 0, or after ``timeout_s``.

    Slots come back as the orchestrator counts each terminal event, a little after the jobs end
    (after a broker restart, up to the consumers' AckWait later).
    """
    return polled(
        lambda: {key: n for key, n in slots_held(nats_urls).items() if n},
        lambda held: not held,
        timeout_s,
    )


def outcome(
    ids: list[str], ended: list[dict[str, Any]], terminal: Counter[str], seconds: float
) -> dict[str, Any]:
    """The figures of one run: statuses, error codes, jobs lost, duplicated and retried."""
    return {
        "submitted": len(ids),
        "statuses": dict(Counter(job["status"] for job in ended)),
        "error_codes": dict(Counter(job["error"]["code"] for job in ended if job.get("error"))),
        "lost": sum(1 for j in ids if terminal[j] == 0),
        "duplicated": sum(1 for j in ids if terminal[j] > 1),
        "retried": sum(1 for job in ended if job.get("attempts", 1) > 1),
        "seconds": round(seconds, 1),
    }


def assert_each_succeeded_once(
    ids: list[str], ended: list[dict[str, Any]], terminal: Counter[str], figures: dict[str, Any]
) -> None:
    """Every job succeeded with its 64x64 output, with exactly one terminal event."""
    assert figures["statuses"] == {"succeeded": len(ids)}, figures
    assert all(terminal[j] == 1 for j in ids), figures
    for job in ended:
        [output] = job["outputs"]
        assert output["size"] > 0 and (output["width"], output["height"]) == (64, 64)
