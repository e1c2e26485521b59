"""The Go servers the local stack starts run one Go scheduler thread unless told otherwise, and
leave nothing of theirs behind outside their folders."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from comfyline.stack import NatsServer, SeaweedS3
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
