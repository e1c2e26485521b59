"""Choosing Docker containers for the test servers, and what happens without an engine."""

from __future__ import annotations

import pytest

from comfyline.stack import ServerError
from comfyline.stack.containers import ContainerNats, ContainerS3, use_containers


def test_binaries_are_the_default_and_containers_are_opt_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COMFYLINE_TEST_SERVERS", raising=False)
    assert not use_containers()
    monkeypatch.setenv("COMFYLINE_TEST_SERVERS", "containers")
    assert use_containers()


@pytest.mark.parametrize("make", [ContainerNats, lambda: ContainerS3("ak", "secret-key-123")])
def test_without_a_docker_engine_the_error_says_what_to_do(
    make: object, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(ServerError, match="needs a running Docker engine"):
        make()  # type: ignore[operator]
