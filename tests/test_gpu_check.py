"""bench/gpu_check.py runs on a GPU machine we get for minutes: its --smoke mode runs the
same code on the CPU, so a broken check is found here first."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_mode_runs_and_passes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["checks"]) == {
        "precision",
        "chunked",
        "kv_cache",
        "compile",
        "train",
        "generate",
    }
    assert all(check["passed"] for check in results["checks"].values())
    assert "| tiny-d32 | bf16 |" in (tmp_path / "results.md").read_text()
