"""The playground, used in a real browser: cpu-smoke run from its form, inpaint run with two files
uploaded from the page's file inputs, both listed in the gallery; screenshots kept.

Needs Chromium (Debian's ``chromium``). On a machine without it the test skips and says so;
``.ci/run`` installs it and sets ``COMFYLINE_REQUIRE_BROWSER=1``, which turns that skip into a
failure.
"""

from __future__ import annotations

import io
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


def png(size: tuple[int, int], colour: tuple[int, ...], hole: bool = False) -> bytes:
    from PIL import Image

    image = Image.new("RGBA" if len(colour) == 4 else "RGB", size, colour)
    if hole:
        image.paste(
            (255, 255, 255), (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4)
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def artifacts(tmp_path: Path) -> Path:
    """Where screenshots are kept: ``COMFYLINE_TEST_ARTIFACTS`` (``.ci/run`` sets it), else the
    test's temp folder."""
    folder = Path(os.environ.get("COMFYLINE_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_playground_runs_models_from_their_forms_and_lists_them(
    stack: Stack, tmp_path: Path
) -> None:
    executable = _browser_or_skip()
    from playwright.sync_api import Page, sync_playwright

    info = stack.up()
    shots = artifacts(tmp_path)

    def run_and_wait(page: Page) -> None:
        before = page.inner_text("#job")
        page.click("#submit")
        page.wait_for_function(
            "([before]) => document.getElementById('job').textContent !== before"
            " && document.getElementById('status').dataset.done !== undefined",
            arg=[before],
            timeout=60_000,
        )
        assert page.get_attribute("#status", "data-done") == "succeeded", page.inner_text("#log")
        page.wait_for_function(
            "document.querySelector('#outputs img')?.naturalWidth > 0", timeout=15_000
        )

    def output_size(page: Page) -> list[int]:
        size: list[int] = page.evaluate(
            "[document.querySelector('#outputs img').naturalWidth,"
            " document.querySelector('#outputs img').naturalHeight]"
        )
        return size

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
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            failed: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.extend([m.text] if m.type == "error" else []))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(info["playground_url"])
            page.fill("#key", info["api_key"])
            page.press("#key", "Tab")  # change: the key is kept and the models load
            page.wait_for_selector("#model option[value='cpu-smoke']", state="attached")

            # cpu-smoke from its form: sliders for the sizes
            page.select_option("#model", "cpu-smoke")
            page.fill("[aria-label='width value']", "160")
            page.fill("[aria-label='height value']", "96")
            run_and_wait(page)
            assert output_size(page) == [160, 96]
            assert page.inner_text("#job").startswith("job_")
            page.screenshot(path=str(shots / "playground-cpu-smoke.png"), full_page=True)

            # inpaint: two files uploaded from real file inputs, the prompt pre-filled
            page.select_option("#model", "inpaint-sdxl")
            assert page.input_value("#f-prompt"), "the required prompt is not pre-filled"
            page.wait_for_function(
                "/^\\d+ tokens/.test(document.getElementById('f-prompt-tokens').textContent)",
                timeout=15_000,
            )
            assert page.locator("#f-image-earlier option").count() >= 2  # cpu-smoke's output
            page.set_input_files(
                "#f-image",
                {
                    "name": "photo.png",
                    "mimeType": "image/png",
                    "buffer": png((128, 96), (200, 120, 40)),
                },
            )
            page.set_input_files(
                "#f-mask",
                {
                    "name": "mask.png",
                    "mimeType": "image/png",
                    "buffer": png((128, 96), (0, 0, 0), True),
                },
            )
            page.wait_for_function(
                "[...document.querySelectorAll('[data-asset]')]"
                ".filter((e) => e.dataset.asset.startsWith('ast_')).length === 2",
                timeout=20_000,
            )
            page.fill("[aria-label='steps value']", "4")
            run_and_wait(page)
            assert output_size(page) == [128, 96]

            # the gallery lists both, newest first, each with its image and a re-run button
            page.wait_for_selector("#gallery li[data-model='inpaint-sdxl'] img")
            models = page.eval_on_selector_all(
                "#gallery li", "items => items.map((li) => li.dataset.model)"
            )
            assert models[:2] == ["inpaint-sdxl", "cpu-smoke"], models
            page.screenshot(path=str(shots / "playground.png"), full_page=True)
            page.click("#gallery li[data-model='cpu-smoke'] button")
            assert page.input_value("#model") == "cpu-smoke"
            assert page.input_value("[aria-label='width value']") == "160"
            assert "connection interrupted" not in page.inner_text("#log")
            assert not errors, errors
            # (an event stream the page closes once its job ended counts as aborted: not a failure)
            assert not [u for u in failed if "/events" not in u], failed
        finally:
            browser.close()
