"""The playground, used in a real browser: key in, model picked, job submitted, image shown.

Needs Chromium (Debian's ``chromium``). On a machine without it the test skips and says so;
``.ci/run`` installs it and sets ``COMFYLINE_REQUIRE_BROWSER=1``, which turns that skip into a
failure.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from .conftest import Stack

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser_or_skip() -> str:
    if CHROMIUM:
        return CHROMIUM
    reason = "Chromium is not installed (apt-get install chromium)"
    if os.environ.get("COMFYLINE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and COMFYLINE_REQUIRE_BROWSER=1 makes this test required")
    pytest.skip(reason)


def test_playground_runs_a_job_and_shows_its_image(stack: Stack, tmp_path: Path) -> None:
    executable = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    info = stack.up()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(info["playground_url"])
            page.fill("#key", info["api_key"])
            page.click("#load")
            page.wait_for_selector("#model option[value='cpu-smoke']", state="attached")
            page.select_option("#model", "cpu-smoke")
            page.fill("#input", json.dumps({"width": 160, "height": 96, "color": 0x3366CC}))
            page.click("#submit")
            page.wait_for_function(
                "document.getElementById('status').textContent === 'succeeded'", timeout=30_000
            )
            image = page.wait_for_selector("#outputs img", timeout=10_000)
            assert image is not None
            page.wait_for_function(
                "document.querySelector('#outputs img').naturalWidth > 0", timeout=10_000
            )
            size = page.evaluate(
                "[document.querySelector('#outputs img').naturalWidth,"
                " document.querySelector('#outputs img').naturalHeight]"
            )
            assert size == [160, 96]
            assert page.inner_text("#job").startswith("job_")
            assert "completed" in page.inner_text("#log")
            page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
