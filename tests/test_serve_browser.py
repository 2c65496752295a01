"""The playground in a real browser: Playwright for Python driving Debian's chromium.

The browser is the system's (`apt-get install chromium`, which .ci/run does); Playwright
never downloads one here.
"""

import os
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from tinylm.serve.app import ServeConfig
from tinylm.serve.server import ServerThread, load_models

CHROMIUM = Path("/usr/bin/chromium")
# Skipped only outside CI: .ci/run installs chromium, so there a missing browser fails.
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium: apt-get install -y chromium",
)


@pytest.fixture(scope="module")
def url(tiny_run, long_run):
    """The tiny run, and one with a 256-token context (long enough to abort mid-stream)."""
    models = load_models([f"tiny={tiny_run}", f"long={long_run}"], "cpu", "fp32")
    with ServerThread(models, ServeConfig()) as url:
        yield url


@pytest.fixture(scope="module")
def page(url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(url)
        page.wait_for_selector("#model option[value=long]", state="attached")
        yield page
        browser.close()


def test_prompt_streams_coloured_tokens_and_a_finish_reason(page, tmp_path):
    generate(page, "tiny", "The history of", seed="1", max_tokens="20")
    page.wait_for_function("document.querySelector('#finish').textContent !== '–'")
    assert page.text_content("#finish") in ("length", "stop")
    output = page.text_content("#output")
    assert output.startswith("The history of") and len(output) > len("The history of")
    probs = [
        float(p) for p in page.eval_on_selector_all(".tok", "els => els.map(e => e.dataset.p)")
    ]
    assert probs and all(0 < p <= 1 for p in probs)
    assert "alternatives" in page.get_attribute(".tok", "title")
    tokens = int(page.text_content("#tokens"))
    assert tokens == len(probs) or page.text_content("#finish") == "stop"
    assert tokens < 2 or float(page.text_content("#rate")) > 0
    shot = tmp_path / "playground.png"
    page.screenshot(path=str(shot))
    assert_not_blank(shot)


def test_abort_stops_the_stream(page, url):
    generate(page, "long", "Once", seed="", max_tokens="255")
    page.wait_for_function("document.querySelectorAll('#output .tok').length >= 3")
    page.click("#abort")
    page.wait_for_function("document.querySelector('#finish').textContent === 'aborted'")
    streamed = page.eval_on_selector_all(".tok", "els => els.length")
    assert 3 <= streamed < 255 and page.is_enabled("#generate")
    time.sleep(0.3)
    assert page.eval_on_selector_all(".tok", "els => els.length") == streamed  # it stopped
    # Nothing is left running on the server (that a disconnect cancels a request that is
    # still generating is checked in test_serve_api, where the timing is under control).
    for _ in range(100):
        health = httpx.get(f"{url}/health").json()
        if health["active"] == 0:
            break
        time.sleep(0.02)
    assert health["active"] == 0


def generate(page, model: str, prompt: str, seed: str, max_tokens: str) -> None:
    """Fill the form as a user would and press Generate."""
    page.select_option("#model", model)
    page.fill("#prompt", prompt)
    page.fill("#seed", seed)
    page.fill("#max_tokens", max_tokens)
    page.click("#generate")


def assert_not_blank(png: Path) -> None:
    import matplotlib.image
    import numpy as np

    pixels = matplotlib.image.imread(str(png))[..., :3]  # (H, W, 3) in [0, 1]
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 1000
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50 and pixels.std() > 0.05  # text, controls, coloured tokens
