"""The whole system on one machine: NATS, S3, ComfyUI (or the simulator), the four services.

Everything lives in one state folder, so a second start finds the jobs of the first:

    <state-dir>/nats/        JetStream store          <state-dir>/logs/<name>.log
    <state-dir>/nats-cluster/node-<i>/ (--nats-nodes)
    <state-dir>/s3/          SeaweedFS data           <state-dir>/credentials.json
    <state-dir>/comfyui-sim/ simulator files          <state-dir>/stack.json (once ready)

NATS is started here, one server or a cluster of ``nats_nodes``, unless ``nats_url`` names one
already running (one URL or several comma-separated: a cluster); ``nats_replicas`` is how many
copies of each stream and KV bucket the services make (by default as many as the nodes started
here, at most 3; 1 on a given NATS). ``gateways`` runs that many gateway processes, the
first on ``port``, the others on free ports (``stack.json``: ``gateway_urls``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from comfyline.contracts import Names

from .servers import (
    ChildProcess,
    NatsCluster,
    NatsServer,
    SeaweedS3,
    ServerError,
    free_port,
    on_preferred_port,
    preferred_port,
    wait_until,
)

SERVICES = ("enhancer", "orchestrator", "worker", "gateway")
PREFIX = {
    "enhancer": "ENHANCER",
    "orchestrator": "ORCHESTRATOR",
    "worker": "WORKER",
    "gateway": "GATEWAY",
}
BUCKET = "comfyline"
# Pages served from this machine (the playground, a dev server on any port) may call the API.
LOCAL_ORIGINS = r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]+)?$"


@dataclass
class Credentials:
    """Secrets made on the first start and kept in the state folder."""

    s3_access_key: str
    s3_secret_key: str
    api_key: str
    events_secret: str

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        if path.exists():
            return cls(**json.loads(path.read_text()))
        made = cls(
            s3_access_key="comfyline",
            s3_secret_key=secrets.token_urlsafe(24),
            api_key=f"cl_dev_{secrets.token_urlsafe(24)}",
            events_secret=secrets.token_urlsafe(32),
        )
        write_private(path, json.dumps(made.__dict__, indent=2))
        return made


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds a key or a secret), whole: the text goes
    to a new file that then takes the path's place, so a reader (a user's script polling
    ``stack.json`` while a part restarts) never sees it empty or half written."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(part, path)


@dataclass
class LocalStack:
    """Starts, watches and stops every part of a local Comfyline."""

    state_dir: Path
    port: int = 8000
    host: str = "127.0.0.1"
    comfyui_url: str | None = None
    #: The given ComfyUI's output folder, when this machine can read it (its worker then reads
    #: outputs there instead of through /view); the simulator started here always shares its own.
    comfyui_output_dir: Path | None = None
    sim_args: list[str] = field(default_factory=list)
    #: A NATS already running (comma-separated URLs of a cluster's nodes); None starts one here.
    nats_url: str | None = None
    #: How many nats-server nodes to start here, as one JetStream cluster (without ``nats_url``).
    nats_nodes: int = 1
    #: Copies of each stream and KV bucket (at most the number of JetStream nodes); None: the
    #: nodes started here (at most 3), or 1 on a given NATS.
    nats_replicas: int | None = None
    #: How many gateway processes serve the API (each on its own port, one shared state).
    gateways: int = 1
    nats: NatsServer | None = None
    nats_cluster: NatsCluster | None = None
    s3: SeaweedS3 | None = None
    children: dict[str, ChildProcess] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: Each service's Prometheus endpoint (written to ``stack.json`` as ``metrics_urls``).
    metrics_urls: dict[str, str] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def nats_urls(self) -> list[str]:
        """The NATS the services use: the one given, or the one started here."""
        if self.nats_url is not None:
            return [url.strip() for url in self.nats_url.split(",") if url.strip()]
        if self.nats_cluster is not None:
            return [node.url for node in self.nats_cluster.nodes]
        assert self.nats is not None, "NATS is not started"
        return [self.nats.url]

    @property
    def replicas(self) -> int:
        """Copies of each stream and KV bucket the services make."""
        if self.nats_replicas is not None:
            return self.nats_replicas
        return 1 if self.nats_url is not None else min(self.nats_nodes, 3)

    @property
    def gateway_names(self) -> list[str]:
        """``gateway``, then ``gateway-2``, ``gateway-3``, ...: one per gateway process."""
        return ["gateway"] + [f"gateway-{i}" for i in range(2, self.gateways + 1)]

    def gateway_port(self) -> int:
        """The gateway's port: the one asked for if it is free, else (or for 0) a free one.
        The gateway binds it last, so it is kept from every server started before."""
        return preferred_port(self.port) if self.port else free_port()

    def start(self, on_step: Any = print) -> dict[str, Any]:
        """Start everything, wait until each part is ready, write ``stack.json``."""
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "stack.json").unlink(missing_ok=True)
        creds = Credentials.load_or_create(self.state_dir / "credentials.json")
        self._check_layout()
        self.port = self.gateway_port()
        try:
            self._start_nats(on_step)
            self.s3 = on_preferred_port(9000, partial(self._start_s3, creds))
            on_step(f"  S3 (SeaweedFS)  http://{self.s3.endpoint}")
            comfyui = self.comfyui_url or self._start_simulator()
            if self.comfyui_url is None:
                self.comfyui_output_dir = self.state_dir / "comfyui-sim" / "output"
            on_step(f"  ComfyUI         {comfyui}" + ("" if self.comfyui_url else " (simulator)"))
            gateway_url = f"http://{self.host}:{self.port}"
            gateway_urls = [gateway_url] + [
                f"http://{self.host}:{free_port()}" for _ in range(self.gateways - 1)
            ]
            for name in (n for n in SERVICES if n != "gateway"):
                self._start_service(name, self._service_env(name, creds, comfyui, gateway_url))
            for name, url in zip(self.gateway_names, gateway_urls, strict=True):
                env = self._service_env("gateway", creds, comfyui, url, process=name)
                self._start_service("gateway", env, name)
            self._wait_services(gateway_urls)
        except BaseException:
            self.stop()
            raise
        self.info = {
            "gateway_url": gateway_url,
            "docs_url": f"{gateway_url}/docs",
            "playground_url": f"{gateway_url}/playground",
            "s3_endpoint": f"http://{self.s3.endpoint}",
            "s3_bucket": BUCKET,
            "gateway_urls": gateway_urls,
            "nats_url": self.nats_urls[0],
            "nats_urls": self.nats_urls,
            "nats_replicas": self.replicas,
            "comfyui_url": comfyui,
            "comfyui_is_simulator": self.comfyui_url is None,
            "comfyui_output_dir": str(self.comfyui_output_dir) if self.comfyui_output_dir else None,
            "api_key": creds.api_key,
            "cors_origins": "http(s)://localhost, 127.0.0.1 and [::1], any port",
            "metrics_urls": dict(self.metrics_urls),
            "state_dir": str(self.state_dir),
            "up_pid": os.getpid(),
            "pids": {name: child.pid for name, child in self.all_children().items()},
            "started_in_s": round(time.monotonic() - started, 2),
        }
        write_private(self.state_dir / "stack.json", json.dumps(self.info, indent=2))
        return self.info

    def _check_layout(self) -> None:
        if self.gateways < 1 or self.nats_nodes < 1 or self.replicas < 1:
            raise ServerError("gateways, NATS nodes and NATS replicas must be at least 1")
        if self.nats_url is not None and self.nats_nodes > 1:
            raise ServerError("give a NATS to use or a number of nodes to start, not both")
        if self.nats_url is None and self.replicas > self.nats_nodes:
            raise ServerError(
                f"{self.replicas} replicas need as many NATS nodes; {self.nats_nodes} are started"
            )

    def _start_nats(self, on_step: Any = print) -> None:
        """The NATS the services use: one server, a cluster, or the one given (started there)."""
        if self.nats_url is not None:
            on_step(f"  NATS (given)    {', '.join(self.nats_urls)}")
        elif self.nats_nodes > 1:
            self.nats_cluster = NatsCluster(self.state_dir / "nats-cluster", self.nats_nodes)
            self.nats_cluster.start()
            on_step(f"  nats-server x{self.nats_nodes} {', '.join(self.nats_urls)}")
        else:
            self.nats = on_preferred_port(4222, self._start_nats_on)
            on_step(f"  nats-server     {self.nats.url}")

    def _start_nats_on(self, port: int) -> NatsServer:
        nats = NatsServer(self.state_dir / "nats", port=port)
        nats.start()
        return nats

    def _start_s3(self, creds: Credentials, port: int) -> SeaweedS3:
        s3 = SeaweedS3(self.state_dir / "s3", creds.s3_access_key, creds.s3_secret_key, port)
        s3.start()
        return s3

    def _start_simulator(self) -> str:
        return on_preferred_port(8188, self._start_simulator_on)

    def _start_simulator_on(self, port: int) -> str:
        child = ChildProcess(
            "comfyui-sim",
            [
                sys.executable,
                "-m",
                "comfyline.comfyui_sim",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(self.state_dir / "comfyui-sim"),
                *self.sim_args,
            ],
            self.logs / "comfyui-sim.log",
        )
        child.spawn()
        self.children["comfyui-sim"] = child
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: httpx.get(f"{url}/system_stats", timeout=1).status_code == 200,
            "ComfyUI simulator",
            child,
            30,
        )
        return url

    def _service_env(
        self,
        name: str,
        creds: Credentials,
        comfyui: str,
        gateway_url: str,
        process: str | None = None,
    ) -> dict[str, str]:
        """The environment of service ``name`` (its process is called ``process``, e.g. the
        second gateway ``gateway-2``; ``gateway_url`` is where that gateway listens)."""
        assert self.s3 is not None
        p = PREFIX[name]
        env = {
            f"{p}_ENVIRONMENT": "development",
            f"{p}_NATS__URL": ",".join(self.nats_urls),
            f"{p}_NATS__REPLICAS": str(self.replicas),
            f"{p}_S3__ENDPOINT": self.s3.endpoint,
            f"{p}_S3__ACCESS_KEY": creds.s3_access_key,
            f"{p}_S3__SECRET_KEY": creds.s3_secret_key,
            f"{p}_S3__BUCKET": BUCKET,
        }
        otel = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if otel:
            env[f"{p}_OTEL__ENDPOINT"] = otel
        if name != "gateway":  # the gateway serves /metrics on its own port
            port = free_port()
            env[f"{p}_METRICS_HOST"] = "127.0.0.1"
            env[f"{p}_METRICS_PORT"] = str(port)
            self.metrics_urls[name] = f"http://127.0.0.1:{port}/metrics"
        else:
            self.metrics_urls[process or name] = f"{gateway_url}/metrics"
        if name == "worker":
            env["WORKER_COMFYUI_URLS"] = comfyui
            if self.comfyui_output_dir is not None:
                env["WORKER_COMFYUI_OUTPUT_DIRS"] = f"{comfyui}={self.comfyui_output_dir}"
        if name in ("orchestrator", "gateway"):
            # Webhooks to a receiver on this machine: both judge URLs by the same policy.
            env[f"{p}_WEBHOOK__ALLOW_LOOPBACK"] = "true"
            env[f"{p}_WEBHOOK__ALLOW_HTTP"] = "true"
        if name == "gateway":
            env |= {
                "GATEWAY_HOST": self.host,
                "GATEWAY_PORT": gateway_url.rsplit(":", 1)[1],
                "GATEWAY_PUBLIC_URL": gateway_url,
                "GATEWAY_AUTH__ADMIN_API_KEY": creds.api_key,
                "GATEWAY_AUTH__ADMIN_OWNER": "dev",
                # A laptop stack is for trying things: limits a person never meets.
                "GATEWAY_LIMITS__SUBMIT_PER_MIN": "6000",
                "GATEWAY_LIMITS__STATUS_PER_MIN": "60000",
                "GATEWAY_LIMITS__ACTIVE_JOBS": "1000",
                "GATEWAY_EVENTS_TOKEN_SECRET": creds.events_secret,
                "GATEWAY_CORS_ORIGIN_REGEX": LOCAL_ORIGINS,
            }
        return env

    def _start_service(self, service: str, env: dict[str, str], name: str | None = None) -> None:
        name = name or service
        child = ChildProcess(
            name, [sys.executable, "-m", f"comfyline.{service}"], self.logs / f"{name}.log", env=env
        )
        child.spawn()
        self.children[name] = child

    def _wait_services(self, gateway_urls: list[str]) -> None:
        for name, url in zip(self.gateway_names, gateway_urls, strict=True):
            wait_until(partial(_answers, f"{url}/readyz"), name, self.children[name], 60)
        for name in ("enhancer", "orchestrator", "worker"):
            if not self.children[name].alive():
                raise ServerError(f"{name} exited:\n{self.children[name].log_tail()}")
        asyncio.run(_wait_for_consumers(",".join(self.nats_urls), timeout_s=60))

    def all_children(self) -> dict[str, ChildProcess]:
        """Every process of the stack by name: the servers and the parts started on them."""
        servers = [self.nats, *(self.nats_cluster.nodes if self.nats_cluster else []), self.s3]
        found = {server.child.name: server.child for server in servers if server}
        return found | self.children

    def record_pids(self, restarts: dict[str, int]) -> None:
        """Rewrite ``stack.json`` with the current PIDs (after a restart) and restart counts."""
        if not self.info:
            return
        self.info["pids"] = {name: child.pid for name, child in self.all_children().items()}
        self.info["restarts"] = restarts
        write_private(self.state_dir / "stack.json", json.dumps(self.info, indent=2))

    def stop(self) -> None:
        """Stop every part we started, each by its PID: the services together (each finishes
        what it holds on its own, within its grace, while what it uses still runs), then the
        simulator, S3 and NATS together."""
        services = [c for name, c in reversed(self.children.items()) if name != "comfyui-sim"]
        backing = [c for name, c in self.children.items() if name == "comfyui-sim"]
        backing += [part.child for part in (self.s3, self.nats) if part is not None]
        backing += [node.child for node in self.nats_cluster.nodes] if self.nats_cluster else []
        for group in (services, backing):
            for child in group:
                child.terminate()
            for child in group:
                child.stop(grace_s=15)
        self.children.clear()


def _answers(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


async def _wait_for_consumers(nats_url: str, timeout_s: float) -> None:
    """Ready means: a worker announced itself and the services answer on NATS."""
    from comfyline.runtime import Bus, NatsSettings

    names = Names()
    bus = await Bus.connect(NatsSettings(url=nats_url, connect_attempts=10), names, "comfyline-up")
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                workers = await bus.kv(names.bucket("workers"))
                if await workers.keys():
                    return
            except Exception:
                pass
            await asyncio.sleep(0.2)
        raise ServerError("no worker announced itself in time; see the worker's log")
    finally:
        await bus.close()
