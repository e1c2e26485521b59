"""What ``comfyline up`` hands each service is what that service reads, and secrets stay private."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from comfyline.gateway.settings import Settings as GatewaySettings
from comfyline.orchestrator.settings import Settings as OrchestratorSettings
from comfyline.stack import servers
from comfyline.stack.local import Credentials, LocalStack, write_private
from comfyline.stack.servers import free_port, keep_port, preferred_port


def _env(tmp_path: Path, name: str) -> dict[str, str]:
    stack = LocalStack(tmp_path)
    stack.nats = cast(Any, SimpleNamespace(url="nats://127.0.0.1:4222"))
    stack.s3 = cast(Any, SimpleNamespace(endpoint="http://127.0.0.1:9000"))
    creds = Credentials.load_or_create(tmp_path / "credentials.json")
    return stack._service_env(name, creds, "http://127.0.0.1:8188", "http://127.0.0.1:8000")


@pytest.mark.parametrize(
    ("name", "settings_class"),
    [("gateway", GatewaySettings), ("orchestrator", OrchestratorSettings)],
)
def test_webhooks_to_this_machine_work_under_the_local_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, settings_class: type[Any]
) -> None:
    env = _env(tmp_path, name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = settings_class()
    assert settings.webhook.allow_loopback is True and settings.webhook.allow_http is True
    # Every variable the stack sets names a setting the service has (no silent typo).
    prefix = f"{name.upper()}_"
    fields = set(settings_class.model_fields)
    for key in env:
        assert key.startswith(prefix), key
        assert key[len(prefix) :].split("__")[0].lower() in fields, key


def test_files_holding_secrets_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    Credentials.load_or_create(tmp_path / "credentials.json")
    write_private(tmp_path / "stack.json", "{}")
    for name in ("credentials.json", "stack.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


def test_a_stack_on_a_given_nats_cluster_hands_every_service_its_urls_and_replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = "nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats://127.0.0.1:4224"
    stack = LocalStack(tmp_path, nats_url=urls, nats_replicas=3, gateways=2)
    stack.s3 = cast(Any, SimpleNamespace(endpoint="127.0.0.1:9000"))
    creds = Credentials.load_or_create(tmp_path / "credentials.json")
    assert stack.nats is None and len(stack.nats_urls) == 3
    env = stack._service_env("orchestrator", creds, "http://127.0.0.1:8188", "http://h:1")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nats = OrchestratorSettings().nats
    assert nats.replicas == 3
    assert nats.url.split(",") == [u.strip() for u in urls.split(",")]


def test_each_gateway_process_listens_on_its_own_port_and_lists_its_metrics(
    tmp_path: Path,
) -> None:
    stack = LocalStack(tmp_path, gateways=3)
    stack.nats = cast(Any, SimpleNamespace(url="nats://127.0.0.1:4222"))
    stack.s3 = cast(Any, SimpleNamespace(endpoint="127.0.0.1:9000"))
    creds = Credentials.load_or_create(tmp_path / "credentials.json")
    assert stack.gateway_names == ["gateway", "gateway-2", "gateway-3"]
    ports = []
    for name, port in zip(stack.gateway_names, (8000, 8101, 8102), strict=True):
        url = f"http://127.0.0.1:{port}"
        env = stack._service_env("gateway", creds, "http://127.0.0.1:8188", url, process=name)
        assert env["GATEWAY_PUBLIC_URL"] == url
        ports.append(int(env["GATEWAY_PORT"]))
        # One shared secret: an events token made by one gateway opens a stream on another.
        assert env["GATEWAY_EVENTS_TOKEN_SECRET"] == creds.events_secret
    assert ports == [8000, 8101, 8102]
    assert stack.metrics_urls == {
        "gateway": "http://127.0.0.1:8000/metrics",
        "gateway-2": "http://127.0.0.1:8101/metrics",
        "gateway-3": "http://127.0.0.1:8102/metrics",
    }


def test_stack_json_is_never_seen_half_written(tmp_path: Path) -> None:
    """A script polling stack.json while it is rewritten (a part restarted) reads it whole."""
    path = tmp_path / "stack.json"
    write_private(path, json.dumps({"n": 0, "pad": "x" * 20_000}))
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(1, 300):
            write_private(path, json.dumps({"n": n, "pad": "x" * 20_000}))
    finally:
        done.set()
        reader.join()
    assert seen and all(json.loads(text)["pad"] for text in seen)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["stack.json"]


def test_no_two_servers_of_a_stack_are_handed_the_same_port() -> None:
    """Ports are handed out before their servers bind them: one handed out is never handed again.

    200 draws from the kernel's ephemeral range repeat a port more often than not; the stack's
    ports must not (a repeat once gave the simulator the gateway's port).
    """
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def _outside_port() -> int:
    """A free port chosen outside the stack's bookkeeping, as a user or a test chooses one (and
    not one this process's servers were handed before: the system may give it out again)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in servers._PLANNED:
            return port


def test_the_gateway_port_asked_for_is_kept_from_the_servers_started_before_it() -> None:
    """``comfyline up --port P`` keeps P: a server whose preferred port is P gets another one."""
    preferred = _outside_port()
    assert preferred_port(preferred) == preferred  # free and not planned: a preferred port is taken
    asked = _outside_port()
    keep_port(asked)
    assert preferred_port(asked) != asked


def test_a_port_whose_last_connections_wait_out_their_close_is_still_preferred() -> None:
    """``comfyline up`` started again at once keeps its port: the connections the last gateway
    closed wait in TIME_WAIT on it, which no server (they bind with SO_REUSEADDR) minds."""
    preferred = _outside_port()
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", preferred))
        listener.listen()
        with socket.create_connection(("127.0.0.1", preferred)) as client:
            served, _ = listener.accept()
            served.close()  # the server's side closes first, so its side waits in TIME_WAIT
            client.recv(1)
    assert preferred_port(preferred) == preferred


def test_a_gateway_port_that_is_taken_or_0_becomes_a_free_one(tmp_path: Path) -> None:
    """``comfyline up --port P`` serves on P when it is free, else on a free port it names
    (in what it prints and in stack.json), and ``--port 0`` on a free port, never on ":0"."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = int(busy.getsockname()[1])
        moved = LocalStack(tmp_path, port=taken).gateway_port()
        assert moved != taken and moved > 0
    chosen = LocalStack(tmp_path, port=0).gateway_port()
    assert chosen > 0 and chosen not in (taken, moved)
    free = _outside_port()
    assert LocalStack(tmp_path, port=free).gateway_port() == free
