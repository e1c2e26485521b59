"""A real ComfyUI for the tests and the benchmark: installed from a tarball into a cache folder,
started on a free loopback port, stopped by PID. Test infrastructure only, never part of the
product: the services reach ComfyUI only through its URL.

    python -m comfyline.testkit.real_comfyui setup     # install (or reuse) and say where
    python -m comfyline.testkit.real_comfyui run       # start one, print its URL, stop on Ctrl-C

The tarball is ``$COMFYLINE_COMFYUI_TARBALL`` or ``../shared/vendor/comfyui-<version>.tar.gz``
next to the repository. The cache is ``$COMFYLINE_CACHE`` (default ``~/.cache/comfyline``); the
real ComfyUI's venv is about 6 GB and must never live inside the repository, where ruff, mypy and
pytest would walk into it. A marker file records a finished install, so an interrupted one is
redone and a finished one is reused.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from comfyline.stack.servers import free_port

VERSION = "0.3.64"
#: prctl(2): the signal a process gets when its parent ends.
_PR_SET_PDEATHSIG = 1
#: torch and torchvision that run ComfyUI on a CPU-only machine (a newer torchvision needs them).
TORCH = ("torch==2.14.1", "torchvision==0.29.1")
REPOSITORY = Path(__file__).resolve().parents[5]


def server_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ComfyUI runs in: one torch thread (``OMP_NUM_THREADS=1``) that sleeps
    when idle (``OMP_WAIT_POLICY=PASSIVE``), unless the caller chose otherwise.

    Here the CPU stands in for a GPU and shares its two cores with the whole stack. Torch's
    default is a thread per core, spinning for a while after every operation: that doubled
    ComfyUI's CPU per job (16 ms for a 12.7 ms 512x512 ``cpu-smoke`` job, 8.6 ms without the
    spinning) and took the cores from whatever ran beside or after it, the caller's own
    ``/view`` or a worker's upload. One thread runs these small graphs as fast as two (a direct
    job 11-12 ms against 13 ms with two, both sleeping when idle) and leaves the other core to
    the rest, as a GPU would leave both.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


class RealComfyUIUnavailable(RuntimeError):
    """No installed real ComfyUI and no tarball to install one from."""


def cache_dir() -> Path:
    """Where the venv and the unpacked tree live: outside the repository."""
    root = Path(os.environ.get("COMFYLINE_CACHE") or Path.home() / ".cache" / "comfyline")
    return root / f"comfyui-{VERSION}"


def tarball() -> Path | None:
    """The vendored ComfyUI source, if this machine has it."""
    named = os.environ.get("COMFYLINE_COMFYUI_TARBALL")
    candidates = [Path(named)] if named else []
    candidates += [
        folder / "shared" / "vendor" / f"comfyui-{VERSION}.tar.gz" for folder in REPOSITORY.parents
    ]
    return next((path for path in candidates if path.is_file()), None)


class Installation:
    """The venv and source tree of one ComfyUI release in the cache."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir()
        self.venv = self.root / "venv"
        self.source = self.root / f"ComfyUI-{VERSION}"
        self.marker = self.root / "installed.json"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def ready(self) -> bool:
        return self.marker.is_file() and self.python.is_file() and self.source.is_dir()

    def why_not_ready(self) -> str:
        if self.ready:
            return ""
        if tarball() is None:
            return (
                f"no real ComfyUI: not installed in {self.root} and no tarball "
                f"(set COMFYLINE_COMFYUI_TARBALL or run `python -m comfyline.testkit.real_comfyui "
                f"setup` where ../shared/vendor/comfyui-{VERSION}.tar.gz exists)"
            )
        return (
            f"no real ComfyUI installed in {self.root}: run "
            "`uv run python -m comfyline.testkit.real_comfyui setup` (about 2 min, 6 GB)"
        )

    def ensure(self, log: IO[str] = sys.stderr) -> float:
        """Install if needed (idempotent); returns the seconds it took."""
        started = time.monotonic()
        if self.ready:
            return 0.0
        if self.root.is_dir():
            self._await_other_install(log)
            if self.ready:
                return time.monotonic() - started
        source = tarball()
        if source is None:
            raise RealComfyUIUnavailable(self.why_not_ready())
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time on this machine
            if not self.ready:
                self._install(source, log)
        return time.monotonic() - started

    def _await_other_install(self, log: IO[str], patience_s: float = 1800) -> None:
        """An install by hand (its ``install.log`` ends with ``DONE`` when finished) may be
        running: wait for it rather than install over it, and adopt it once it is done."""
        record = self.root / "install.log"
        deadline = time.monotonic() + patience_s
        while record.is_file():
            tail = record.read_bytes()[-400:].decode(errors="replace").strip()
            if tail.endswith("DONE"):
                if self.python.is_file() and self.source.is_dir():
                    self.marker.write_text(json.dumps({"version": VERSION, "adopted": str(record)}))
                return
            if time.time() - record.stat().st_mtime > 600 or time.monotonic() > deadline:
                return  # abandoned: install (pip skips what is already there)
            print(f"waiting for the install under way in {self.root}", file=log, flush=True)
            time.sleep(10)

    def _install(self, source: Path, log: IO[str]) -> None:
        if not self.python.is_file():
            _run([sys.executable, "-m", "venv", str(self.venv)], log)
        pip = [str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        _run([*pip, *TORCH], log)
        if not self.source.is_dir():
            with tarfile.open(source) as archive:
                archive.extractall(self.root, filter="data")
        requirements = self.root / "requirements.txt"
        wanted = [
            line
            for line in (self.source / "requirements.txt").read_text().splitlines()
            if line.strip().split("=")[0].split(">")[0].split("<")[0].strip()
            not in {"torch", "torchvision", "torchaudio"}
        ]
        requirements.write_text("\n".join([*wanted, "requests", ""]))
        _run([*pip, "-r", str(requirements)], log)
        self.marker.write_text(json.dumps({"version": VERSION, "tarball": str(source)}))


def _run(command: list[str], log: IO[str]) -> None:
    print("+", " ".join(command), file=log, flush=True)
    subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)


class RealComfyUI:
    """One real ComfyUI process on a free port with its own folders; a context manager."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        installation: Installation | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self.installation = installation or Installation()
        self._owns_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="comfyui-real-"))
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.log_path = self.data_dir / "comfyui.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    @property
    def folders(self) -> dict[str, Path]:
        return {name: self.data_dir / name for name in ("out", "tmp", "in", "user")}

    def start(self) -> Self:
        if not self.installation.ready:
            raise RealComfyUIUnavailable(self.installation.why_not_ready())
        for folder in self.folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        folders = self.folders
        command = [
            str(self.installation.python),
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--output-directory",
            str(folders["out"]),
            "--temp-directory",
            str(folders["tmp"]),
            "--input-directory",
            str(folders["in"]),
            "--user-directory",
            str(folders["user"]),
            "--database-url",
            "sqlite:///:memory:",
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                cwd=self.installation.source,
                env=server_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited at start: {self.log_tail()}")
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(f"{self.url}/system_stats", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer in {self.startup_timeout}s")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self, grace: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would; the folders stay for a restart."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In ComfyUI's process, before it starts: SIGTERM when the process that started it ends,
    however it ends (a killed ``run``, a crashed test session), so no ComfyUI outlives it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


#: The signals that end ``run``: each stops ComfyUI and removes its folders first.
_ENDINGS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _interrupt(signum: int, frame: object) -> None:
    """The first ending signal stops ComfyUI (bounded: SIGKILL after a grace) and removes its
    folders; any that follow (a second Ctrl-C, a wrapper passing on the signal its caller sent
    the whole group) wait for that instead of cutting it short and leaving the folders behind."""
    for ending in _ENDINGS:
        signal.signal(ending, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m comfyline.testkit.real_comfyui",
        description=f"A real ComfyUI {VERSION} on the CPU, for tests and benchmarks.",
    )
    parser.add_argument("command", choices=["setup", "run"], help="install (or reuse), or run one")
    args = parser.parse_args(argv)
    installation = Installation()
    if args.command == "setup":
        try:
            took = installation.ensure()
        except RealComfyUIUnavailable as error:
            print(error, file=sys.stderr)
            return 2
        state = "reused" if took == 0 else f"installed in {took:.0f} s"
        print(f"real ComfyUI {VERSION}: {installation.root} ({state})")
        return 0
    for ending in _ENDINGS:
        signal.signal(ending, _interrupt)
    # (the signal a caller sends as soon as it has read the URL is caught like any later one)
    with RealComfyUI() as server, contextlib.suppress(KeyboardInterrupt):
        # One write, the URL first: a caller waiting for the URL finds the folder with it.
        print(f"COMFYUI_URL={server.url}\nCOMFYUI_OUTPUT_DIR={server.folders['out']}", flush=True)
        while True:
            time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
