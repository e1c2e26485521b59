"""Pulling from a durable consumer with steady concurrency and, optionally, per-key order.

The runtime's ``run_consumer`` handles one fetched batch at a time, so one slow message (a policy
check that waits for its timeout) holds back the next batch. The pump instead keeps up to
``concurrency`` messages in flight and fetches as soon as a slot frees. Messages that share a key
(the run events of one job) are handled one after another in stream order, so a job's ``started``
is applied before its ``progress`` whenever both reach the same process. Outcomes still go
through :func:`comfyline.runtime.settle`, the one place that maps them to acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeout

from comfyline.runtime import Bus, Delivery, Handler, settle

log = logging.getLogger(__name__)

KeyOf = Callable[[Msg], str | None]


def run_job_key(msg: Msg) -> str | None:
    """The job id of a ``[<ns>.]runs.<job_id>.<kind>`` subject: one job's reports keep order."""
    parts = msg.subject.split(".")
    return parts[-2] if len(parts) >= 3 else None


async def pump(
    bus: Bus,
    stream: str,
    durable: str,
    handler: Handler,
    stop: asyncio.Event,
    *,
    concurrency: int = 16,
    key: KeyOf | None = None,
    max_batch: int = 64,
    fetch_timeout_s: float = 1.0,
    grace_s: float = 10.0,
) -> None:
    """Fetch from a bound durable consumer until ``stop`` is set, settling each message.

    On stop, in-flight messages get ``grace_s`` to finish; the rest are cancelled, which naks
    them (``settle`` does), so another orchestrator picks them up at once.
    """
    psub = await bus.js.pull_subscribe_bind(durable=durable, stream=stream)
    running: set[asyncio.Task[None]] = set()
    tails: dict[str, asyncio.Task[None]] = {}

    async def one(msg: Msg, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])
        await settle(Delivery.of(msg), handler)

    def forget(msg_key: str, task: asyncio.Task[None]) -> None:
        if tails.get(msg_key) is task:
            del tails[msg_key]

    try:
        while not stop.is_set():
            if len(running) >= concurrency:
                await asyncio.wait(running, timeout=fetch_timeout_s, return_when="FIRST_COMPLETED")
                continue
            try:
                msgs = await psub.fetch(min(max_batch, concurrency - len(running)), fetch_timeout_s)
            except (TimeoutError, NatsTimeout):
                continue
            except ConnectionClosedError:
                break
            except Exception:
                if stop.is_set():
                    break
                log.exception("fetch failed; retrying", extra={"consumer": durable})
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                msg_key = key(msg) if key else None
                task = asyncio.create_task(one(msg, tails.get(msg_key) if msg_key else None))
                running.add(task)
                task.add_done_callback(running.discard)
                if msg_key:
                    tails[msg_key] = task
                    task.add_done_callback(functools.partial(forget, msg_key))
    finally:
        if running:
            _, pending = await asyncio.wait(set(running), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
