"""The Go servers the local stack starts run one Go scheduler thread unless told otherwise,
leave nothing of theirs behind outside their folders, and move to a free port when another
process takes the preferred one first."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from comfyline.stack import NatsServer, SeaweedS3, servers
from comfyline.stack.servers import ChildProcess, go_server_env


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_nats_and_seaweedfs_run_with_one_go_thread(
    nats_server: NatsServer, s3_server: SeaweedS3
) -> None:
    if not isinstance(nats_server, NatsServer) or not isinstance(s3_server, SeaweedS3):
        pytest.skip("the servers run in containers (COMFYLINE_TEST_SERVERS=containers)")
    expected = os.environ.get("GOMAXPROCS", "1")  # the caller's own is passed on as it is
    for server in (nats_server, s3_server):
        assert environment_of(server.child.pid).get("GOMAXPROCS") == expected


def test_a_gomaxprocs_of_the_callers_own_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOMAXPROCS", "4")
    assert go_server_env() == {}
    monkeypatch.delenv("GOMAXPROCS")
    assert go_server_env() == {"GOMAXPROCS": "1"}


@pytest.mark.parametrize("end", ["stop", "kill"])
def test_seaweedfs_leaves_no_socket_in_tmp(tmp_path: Path, end: str) -> None:
    """``weed`` names a Unix socket in /tmp after each of its ports and leaves some there when
    it ends (all of them when killed); ours are removed once it has ended."""
    server = SeaweedS3(tmp_path / "s3", "comfyline", "comfyline-test-secret")
    sockets = server.child.leftovers
    server.start()
    try:
        assert any(path.exists() for path in sockets), "weed made none of the sockets named"
    finally:
        getattr(server, end)()
    assert [path for path in sockets if path.exists()] == []


def test_only_sockets_nothing_listens_on_are_removed(tmp_path: Path) -> None:
    live, stale, plain = tmp_path / "live.sock", tmp_path / "stale.sock", tmp_path / "plain"
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(live))
    listening.listen()
    with socket.socket(socket.AF_UNIX) as closed:
        closed.bind(str(stale))  # bound, then closed: the file stays, nothing listens
    plain.write_text("not a socket")
    child = ChildProcess(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(30)"],
        tmp_path / "log",
        leftovers=(live, stale, plain, tmp_path / "missing.sock"),
    )
    child.spawn()
    try:
        child._remove_leftovers()  # still running: nothing is touched
        assert stale.exists()
    finally:
        child.stop()
        listening.close()
    assert live.exists() and plain.exists() and not stale.exists()


def test_a_preferred_port_taken_before_the_bind_moves_the_server_to_a_free_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stacks starting side by side both find port P free; the second's server then cannot
    bind it: it is started again on a free port instead of failing the stack."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        monkeypatch.setattr(servers, "preferred_port", lambda preferred, host="127.0.0.1": port)
        tried: list[int] = []

        def start(on: int) -> NatsServer:
            tried.append(on)
            nats = NatsServer(tmp_path / f"nats-{len(tried)}", port=on)
            nats.start()
            return nats

        nats = servers.on_preferred_port(port, start)
        try:
            assert tried[0] == port and len(tried) == 2 and nats.port == tried[1] != port
            with socket.create_connection(("127.0.0.1", nats.port), timeout=5) as client:
                assert client.recv(4) == b"INFO"
        finally:
            nats.stop()


def test_a_server_that_fails_for_another_reason_is_not_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(servers, "preferred_port", lambda preferred, host="127.0.0.1": preferred)
    port = servers.free_port()
    tried: list[int] = []

    def start(on: int) -> None:
        tried.append(on)
        raise servers.ServerError("bad configuration")

    with pytest.raises(servers.ServerError, match="bad configuration"):
        servers.on_preferred_port(port, start)
    assert tried == [port]  # the port is free: the failure was not about it
