"""``python -m comfyline.orchestrator`` as a child process, to kill it in tests (SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nats.js.errors import NotFoundError

from comfyline.runtime import Bus, NatsSettings


@contextmanager
def orchestrator_process(
    nats: NatsSettings, namespace: str, log: Path, ack_wait_s: float = 2.0
) -> Iterator[subprocess.Popen[bytes]]:
    """The real service as a child process, configured only through its environment; stopped
    with SIGTERM at the end (then SIGKILL if it does not exit)."""
    env = {
        **os.environ,
        "ORCHESTRATOR_NATS__URL": nats.url,
        "ORCHESTRATOR_NAMESPACE": namespace,
        "ORCHESTRATOR_ENVIRONMENT": "test",
        "ORCHESTRATOR_ACK_WAIT_S": str(ack_wait_s),
        "ORCHESTRATOR_FETCH_TIMEOUT_S": "0.2",
        "ORCHESTRATOR_LOG_LEVEL": "INFO",
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "comfyline.orchestrator"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


async def orchestrator_ready(bus: Bus) -> bool:
    """True once an orchestrator has declared its consumers."""
    try:
        await bus.js.consumer_info(bus.names.stream("TIMERS"), "orchestrator-timers")
    except NotFoundError:
        return False
    return True
