"""Start the simulator as a child process for other tests and benchmarks.

    with SimulatorProcess(tmp_path, args=["--step-time", "0.01"]) as sim:
        ...  # sim.url, sim.pid, sim.data_dir

It runs `sys.executable -m comfyline.comfyui_sim --host H --port P --data-dir D [args]` on a free
port, waits until `GET /system_stats` answers, and stops it by PID: SIGTERM, then SIGKILL after
a grace period. Output goes to `<data_dir>/simulator.log`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self


class SimulatorStartError(RuntimeError):
    """The simulator exited or did not answer before the start-up timeout."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class SimulatorProcess:
    """A simulator subprocess with `.url` and `.pid`; a context manager."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        args: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 15.0,
        stop_timeout: float = 5.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="comfyui-sim-")) if data_dir is None else Path(data_dir)
        )
        self.args = list(args)
        self.host = host
        self.port = port or 0
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.env = dict(env) if env is not None else None
        self.log_path = self.data_dir / "simulator.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._fixed_port = port is not None

    @property
    def output_dir(self) -> Path:
        """Where its SaveImage nodes write (a worker beside it may read outputs there)."""
        return self.data_dir / "output"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the simulator is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "comfyline.comfyui_sim",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]

    def start(self) -> Self:
        """Start and wait until `/system_stats` answers; retries once if the port was taken."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            if not self._fixed_port:
                self.port = free_port(self.host)
            self._spawn()
            try:
                self._wait_ready()
                return self
            except SimulatorStartError:
                self.stop()
                if self._fixed_port or attempt == 2 or "already in use" not in self.log_tail():
                    raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        self._log = open(self.log_path, "ab")
        environment = {**os.environ, **(self.env or {})}
        self._proc = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=environment
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise SimulatorStartError(f"simulator exited during start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/system_stats", timeout=1.0) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)
        raise SimulatorStartError(f"simulator not ready after {self.startup_timeout} s")

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself (e.g. after `--die-at`); its exit code."""
        if self._proc is None:
            raise RuntimeError("the simulator is not running")
        return self._proc.wait(timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, wait `stop_timeout`, then SIGKILL; returns the exit code."""
        proc, code = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(self.stop_timeout)
            code = proc.returncode
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def cleanup(self) -> None:
        """Stop, and remove the data folder if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
