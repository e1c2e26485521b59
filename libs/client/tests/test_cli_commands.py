"""The ``comfyline`` command carries the operators' commands as ``comfyline admin``."""

from __future__ import annotations

from typer.testing import CliRunner

from comfyline.client.cli import app


def test_admin_is_a_command_of_comfyline_with_its_three_groups() -> None:
    result = CliRunner().invoke(app, ["admin", "--help"])
    assert result.exit_code == 0, result.output
    for group in ("workers", "models", "dead-letters"):
        assert group in result.output


def test_admin_without_a_gateway_says_so_and_exits_1() -> None:
    result = CliRunner().invoke(
        app,
        ["admin", "--url", "http://127.0.0.1:9", "--key", "k", "workers"],
    )
    assert result.exit_code == 1
    assert "127.0.0.1:9" in result.output or "connect" in result.output.lower()
