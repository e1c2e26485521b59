"""Fixtures shared by every test: real NATS and S3 servers (see comfyline.testkit.fixtures)."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["comfyline.testkit.fixtures"]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many test processes ``-n auto`` (the default options) starts: the default suite
    mostly waits on its servers, so two or more side by side, each with servers of its own (up
    to four: each may start a real ComfyUI); the slow tests one at a time, in this process, as
    they measure loads and timings that others running beside them would disturb."""
    marks = config.option.markexpr or ""
    if "slow" in marks and "not slow" not in marks:
        return 0
    return max(2, min(4, os.cpu_count() or 1))
