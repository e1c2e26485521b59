"""The local stack as a user starts it (``comfyline up``), for the end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyline.stack import free_port


class Stack:
    """``comfyline up`` in a child process, driven through its ``stack.json``."""

    def __init__(self, state_dir: Path, port: int, args: list[str] | None = None) -> None:
        self.state_dir = state_dir
        self.port = port
        self.args = args or []
        self.env: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def up(self, timeout_s: float = 120) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if k != "COMFYUI_URL"} | self.env
        log = (self.state_dir.parent / "up.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "comfyline.stack",
                "up",
                "--state-dir",
                str(self.state_dir),
                "--port",
                str(self.port),
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        stack_json = self.state_dir / "stack.json"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"comfyline up exited: {self.log_tail()}")
            if stack_json.exists():
                self.info = json.loads(stack_json.read_text())
                return self.info
            time.sleep(0.2)
        raise AssertionError(f"stack not ready in {timeout_s}s: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.state_dir.parent / "up.log").read_text(errors="replace")[-4000:]

    def down(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError("comfyline up did not stop on SIGTERM") from None


@contextlib.contextmanager
def running_stack(folder: Path, args: list[str] | None = None) -> Iterator[Stack]:
    """A stack started in ``folder`` (for a module's shared fixture), stopped at the end."""
    running = Stack(folder / "state", free_port(), args)
    try:
        running.up()
        yield running
    finally:
        running.down()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path / "state", free_port())
    try:
        yield running
    finally:
        running.down()
