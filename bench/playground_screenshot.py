"""The playground screenshot in docs/: serve RUN, generate in Debian's chromium, save a PNG.

PYTHONPATH=src python bench/playground_screenshot.py RUN [--out docs/serve-playground.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run (or checkpoint) directory to serve")
    parser.add_argument("--prompt", default="The history of")
    parser.add_argument("--seed", default="3")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "serve-playground.png")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from tinylm.serve.app import ServeConfig
    from tinylm.serve.server import ServerThread, load_models

    models = load_models([args.run], "cpu", "fp32")
    with ServerThread(models, ServeConfig()) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 620})
        page.goto(url)
        page.wait_for_selector("#model option", state="attached")
        page.fill("#prompt", args.prompt)
        page.fill("#seed", args.seed)
        page.fill("#max_tokens", "24")
        page.fill("#stop", "\\n\\n")
        page.click("#generate")
        page.wait_for_function("document.querySelector('#finish').textContent !== '–'")
        page.screenshot(path=str(args.out))
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
