"""The Go servers the local stack starts run one Go scheduler thread unless told otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from comfyline.stack import NatsServer, SeaweedS3
from comfyline.stack.servers import go_server_env


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
