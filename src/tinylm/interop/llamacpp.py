"""Real llama.cpp on an exported GGUF file, for tests and benchmarks (not needed to export).

llama.cpp runs through the npm package node-llama-cpp (pinned in tools/llamacpp/
package.json), whose prebuilt CPU binaries need no compiler: `npm ci` in tools/llamacpp
(.ci/run does it). tools/llamacpp/llamacpp.mjs takes one JSON request on stdin and answers
with token ids, the next-token distribution and a timed greedy continuation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tinylm.errors import TinyLMError

LLAMACPP_DIR = Path(
    os.environ.get("TINYLM_LLAMACPP_DIR", Path(__file__).resolve().parents[3] / "tools/llamacpp")
)
"""Where package.json, node_modules/ and llamacpp.mjs are (a source checkout's tools/)."""


def llamacpp_available() -> bool:
    """node is on PATH and node-llama-cpp is installed in LLAMACPP_DIR."""
    return (
        shutil.which("node") is not None
        and (LLAMACPP_DIR / "node_modules" / "node-llama-cpp" / "package.json").is_file()
    )


def run_llamacpp(request: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """One request to llamacpp.mjs (see its header for the fields); its JSON answer."""
    if not llamacpp_available():
        raise TinyLMError(
            f"llama.cpp is not installed: run `npm ci` in {LLAMACPP_DIR} (needs Node.js 20+)"
        )
    done = subprocess.run(
        ["node", str(LLAMACPP_DIR / "llamacpp.mjs")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=LLAMACPP_DIR,
    )
    if done.returncode != 0:
        raise RuntimeError(f"llama.cpp failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
