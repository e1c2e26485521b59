"""The stack the bench measures: the local stack, with the bench's own ComfyUI servers, any
number of workers that can be swapped between measurements, and limits no load test meets."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import Names
from comfyline.stack.local import Credentials, LocalStack
from comfyline.stack.servers import ChildProcess, ServerError, free_port, wait_until

#: The gateway's limits for the bench: far above any rate it reaches, so none of them refuses
#: a job (the checks still run on every submission).
BENCH_LIMITS = {
    "GATEWAY_LIMITS__SUBMIT_PER_MIN": "10000000",
    "GATEWAY_LIMITS__STATUS_PER_MIN": "10000000",
    "GATEWAY_LIMITS__ACTIVE_JOBS": "10000000",
}


@dataclass
class BenchStack(LocalStack):
    """``gateway_only``: NATS, S3 and the gateway, nothing behind it. Otherwise every service,
    with the workers of ``set_workers`` (one per group of ComfyUI URLs)."""

    gateway_only: bool = False
    worker_env: dict[str, str] = field(default_factory=dict)
    #: The output folder of each ComfyUI server on this machine (URL -> folder): its workers
    #: read outputs there, as a worker beside its ComfyUI does (``set_workers``).
    output_dirs: dict[str, Path] = field(default_factory=dict)
    workers: list[ChildProcess] = field(default_factory=list)
    #: Milliseconds added to each round trip between a service and S3 (see remote.py); the
    #: bench's clients still reach S3 directly.
    s3_delay_ms: float = 0
    _s3_proxy: ChildProcess | None = None
    _s3_far_endpoint: str = ""
    _base_worker_env: dict[str, str] = field(default_factory=dict)
    _generation: int = 0

    def _service_env(
        self,
        name: str,
        creds: Credentials,
        comfyui: str,
        gateway_url: str,
        process: str | None = None,
    ) -> dict[str, str]:
        env = super()._service_env(name, creds, comfyui, gateway_url, process)
        if self.s3_delay_ms > 0:
            prefix = next(k for k in env if k.endswith("_S3__ENDPOINT")).removesuffix("ENDPOINT")
            env[prefix + "PUBLIC_ENDPOINT"] = env[prefix + "ENDPOINT"]
            env[prefix + "ENDPOINT"] = self._s3_far()
        if name == "gateway":
            env |= BENCH_LIMITS
        if name == "orchestrator":
            # A backlog can be queued while no worker runs (the GPU-busy part starts its workers
            # on a full queue); with workers running this changes nothing.
            env["ORCHESTRATOR_REQUIRE_LIVE_WORKER"] = "false"
        return env

    def _s3_far(self) -> str:
        """The S3 endpoint the services use: the delaying proxy, started on first use."""
        assert self.s3 is not None
        if self._s3_proxy is None:
            port = free_port()
            proxy = ChildProcess(
                "s3-delay",
                [
                    sys.executable,
                    "-m",
                    "bench.remote",
                    "--port",
                    str(port),
                    "--to",
                    self.s3.endpoint,
                    "--delay-ms",
                    str(self.s3_delay_ms),
                ],
                self.logs / "s3-delay.log",
                env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            )
            proxy.spawn()
            self._s3_proxy = proxy
            wait_until(lambda: "delaying" in proxy.log_tail(1), "the S3 delay proxy", proxy, 10)
            self._s3_far_endpoint = f"127.0.0.1:{port}"
        return self._s3_far_endpoint

    def _start_service(self, service: str, env: dict[str, str], name: str | None = None) -> None:
        if service == "worker":
            self._base_worker_env = env
        if self.gateway_only and service != "gateway":
            return
        extra = self.worker_env if service == "worker" else {}
        super()._start_service(service, env | extra, name)

    def _wait_services(self, gateway_urls: list[str]) -> None:
        if not self.gateway_only:
            super()._wait_services(gateway_urls)
            return
        import httpx

        wait_until(
            lambda: httpx.get(f"{gateway_urls[0]}/readyz", timeout=2).status_code == 200,
            "gateway",
            self.children["gateway"],
            60,
        )

    def pid_of(self, name: str) -> int:
        return self.children[name].pid

    def cpu_by_part(self, sims: list[SimulatorProcess]) -> dict[str, float]:
        """CPU seconds used so far by each part: every service, all workers together, NATS,
        S3, and the given simulators together."""
        used: dict[str, float] = {}
        parts = [(name, child.pid) for name, child in self.all_children().items()]
        parts += [("worker", w.pid) for w in self.workers] + [("comfyui", s.pid) for s in sims]
        for name, pid in parts:
            part = "nats-server" if name.startswith("nats") else name
            try:
                used[part] = used.get(part, 0.0) + cpu_seconds(pid)
            except (OSError, ValueError):
                continue  # a process that has ended (a worker being replaced)
        return used

    def set_workers(
        self,
        groups: list[list[str]],
        env: dict[str, str] | None = None,
        shared_outputs: bool = True,
    ) -> None:
        """Stop every worker (the stack's first one included), then start one per group of
        ComfyUI URLs and wait until each has announced itself (and the old ones are gone).
        Each reads its servers' outputs from their folders where ``output_dirs`` knows them
        (unless not ``shared_outputs``: then through ``/view``, as a worker on another host)."""
        first = self.children.pop("worker", None)
        if first is not None:
            first.stop(grace_s=15)
        for worker in self.workers:
            worker.stop(grace_s=15)
        self.workers = []
        self._generation += 1
        ids = []
        for n, urls in enumerate(groups):
            worker_id = f"bench-{os.getpid()}-{self._generation}-{n}"
            shared = [f"{u}={self.output_dirs[u]}" for u in urls if u in self.output_dirs]
            folders = {}  # (no folder known here: the caller's env may name one)
            if not shared_outputs:
                folders = {"WORKER_COMFYUI_OUTPUT_DIRS": ""}
            elif shared:
                folders = {"WORKER_COMFYUI_OUTPUT_DIRS": ",".join(shared)}
            child = ChildProcess(
                f"worker-{worker_id}",
                [sys.executable, "-m", "comfyline.worker"],
                self.logs / f"worker-{worker_id}.log",
                env=self._base_worker_env
                | self.worker_env
                | (env or {})
                | folders
                | {
                    "WORKER_COMFYUI_URLS": ",".join(urls),
                    "WORKER_WORKER_ID": worker_id,
                    "WORKER_METRICS_PORT": str(free_port()),
                },
            )
            child.spawn()
            self.workers.append(child)
            ids.append(worker_id)
        nats_url = ",".join(self.nats_urls)
        asyncio.run(_wait_for_workers(nats_url, set(ids), self.workers, timeout_s=60))

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop(grace_s=15)
        self.workers = []
        super().stop()
        if self._s3_proxy is not None:
            self._s3_proxy.stop()
            self._s3_proxy = None


async def _wait_for_workers(
    nats_url: str, ids: set[str], children: list[ChildProcess], timeout_s: float
) -> None:
    from comfyline.runtime import Bus, NatsSettings

    names = Names()
    bus = await Bus.connect(NatsSettings(url=nats_url, connect_attempts=10), names, "bench")
    deadline = time.monotonic() + timeout_s
    try:
        kv = await bus.kv(names.bucket("workers"))
        while time.monotonic() < deadline:
            for child in children:
                if not child.alive():
                    raise ServerError(f"{child.name} exited:\n{child.log_tail()}")
            try:
                keys = set(await kv.keys())
            except Exception:  # no keys yet
                keys = set()
            if keys == ids:
                return
            await asyncio.sleep(0.1)
        raise ServerError(f"workers {sorted(ids)} did not announce themselves in time")
    finally:
        await bus.close()


def start_simulators(root: Path, count: int, args: list[str]) -> list[SimulatorProcess]:
    """``count`` simulators with the same knobs (``--history-delay 0`` always: the bench
    measures Comfyline, not the simulated race), started side by side."""
    sims = [
        SimulatorProcess(
            root / f"sim-{n}", args=["--history-delay", "0", *args], startup_timeout=90
        )
        for n in range(count)
    ]
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda sim: sim.start(), sims))
    except BaseException:
        stop_simulators(sims)
        raise
    return sims


def stop_simulators(sims: list[SimulatorProcess]) -> None:
    for sim in sims:
        sim.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int, field_name: str = "VmRSS") -> int:
    """A process's resident memory (``VmRSS``) or its peak since the last reset (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no {field_name} for PID {pid}")


def reset_peak_rss(pid: int) -> None:
    """Make ``VmHWM`` start again from the current resident size (Linux ``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
