"""The README's curl walkthrough and route examples, run as written against ``comfyline up``.

The shell blocks are read from README.md itself, so an example that stops working fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyline.stack import free_port

from .conftest import Stack

pytestmark = pytest.mark.e2e
README = Path(__file__).resolve().parents[2] / "README.md"
PNG = b"\x89PNG\r\n\x1a\n"


def shell_blocks(text: str) -> list[str]:
    """The README's ```sh blocks that call the API (the set-up commands are not among them)."""
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    return [b for b in blocks if "curl " in b]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    (tmp_path / "repo").mkdir()
    running = Stack(tmp_path / "repo" / ".comfyline", free_port())
    try:
        yield running
    finally:
        running.down()


def test_the_readme_curl_examples_run_as_written(stack: Stack, tmp_path: Path) -> None:
    walkthrough, routes = shell_blocks(README.read_text())
    assert "links" in walkthrough and "/v1/assets" in routes
    stack.up()
    repo = tmp_path / "repo"
    before = sorted(p.name for p in repo.iterdir())
    script = f"{walkthrough}\necho\necho SCRATCH=$PWD\n{routes}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    out = done.stdout
    assert re.search(r"^event: completed$", out, flags=re.MULTILINE), "no completed event streamed"
    scratch = Path(re.findall(r"^SCRATCH=(.+)$", out, flags=re.MULTILINE)[0])
    assert (scratch / "out.png").read_bytes().startswith(PNG)
    job = json.loads((scratch / "job.json").read_text())
    assert job["model"] == "cpu-smoke"
    assert re.search(r'"id":\s*"ast_', out), "the upload example did not store the file"
    assert sorted(p.name for p in repo.iterdir()) == before, "the walkthrough wrote files here"
    assert "txt2img-sdxl" in out and '"code"' in out  # the model list; the late cancel's 409
