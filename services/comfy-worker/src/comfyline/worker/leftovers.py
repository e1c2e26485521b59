"""Prompts a dead worker left waiting in a ComfyUI server's queue, deleted before they run.

With pipelined dispatch a worker keeps a prompt waiting behind the one executing. If the worker
dies, both jobs come back to the fleet (their messages are redelivered) and will run again, so
the waiting prompt must not run as well: it would occupy the GPU for nothing. Every prompt
carries ``extra_data.comfyline = {worker_id, session, job_id}``; a worker deletes the pending
prompts of another session of its own worker id (its previous life) and of worker ids that are
no longer in the fleet (their heartbeat expired). The prompt that was executing is left to end:
its outputs are never stored, and the redelivered job stores its own under the same keys.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Set
from typing import Any

from .comfy_client import ComfyClient

log = logging.getLogger(__name__)


def stale(extra: dict[str, Any], worker_id: str, session: str, live: Set[str]) -> bool:
    """True for a prompt of ours posted by a worker (or worker life) that is gone."""
    tag = extra.get("comfyline")
    if not isinstance(tag, dict) or tag.get("session") == session:
        return False
    owner = tag.get("worker_id")
    return owner == worker_id or owner not in live


async def clear_leftovers(
    client: ComfyClient, worker_id: str, session: str, live: Iterable[str]
) -> list[str]:
    """Delete the stale pending prompts on one server; returns their prompt ids."""
    live = set(live)
    doomed = [
        pid for pid, extra in await client.pending() if stale(extra, worker_id, session, live)
    ]
    if doomed:
        await client.delete_pending(doomed)
        log.warning(
            "deleted prompts a stopped worker left in the queue",
            extra={"server": client.base_url, "prompt_ids": doomed},
        )
    return doomed
