"""A SIGKILL at any named point of the end of a run, or of an --overwrite, leaves a run
that the same command finishes exactly once: metrics identical to an uninterrupted run
(no second final validation record), loss.png drawn, no temporary file, no hidden run.

The points come from the code itself (TINYLM_KILL_AT=trace lists them; see faults.py).
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import TINY_OVERRIDES

from tinylm.data.prepare import PrepareOptions, prepare
from tinylm.faults import KILL_ENV

TINYLM = [sys.executable, "-m", "tinylm"]
VOLATILE = {"elapsed_s", "tokens_per_s"}  # wall-clock fields differ between any two runs
# Checkpoints at steps 3 and 4 (val improved) before the end; END_STEPS decides whether
# the final step already has a checkpoint (6: its meta is rewritten) or not (5: a new one).
SETTINGS = [*TINY_OVERRIDES, "train.tensorboard=false", "train.eval_interval=4",
            "train.checkpoint_interval=3", "train.eval_batches=1"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """builtin:wiki in bytes: the smallest real model and the quickest start per process."""
    out = tmp_path_factory.mktemp("data") / "wiki-bytes"
    prepare(PrepareOptions(sources=["builtin:wiki"], out=out, tokenizer="bytes"))
    return out


def train(data, out, *extra, kill=None):
    env = dict(os.environ)
    env.pop(KILL_ENV, None)
    if kill:
        env[KILL_ENV] = kill
    cmd = [*TINYLM, "train", f"data.path={data}", *SETTINGS, "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def records(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE} for line in lines]


def leftovers(run):
    root = run.parent
    return [
        str(p.relative_to(root))
        for p in root.rglob(".*")
        if ".tmp" in p.name or ".old-" in p.name or ".previous" in p.name
    ]


def end_points(trace):
    """The kill points the end-of-run sequence passes, from the final validation on."""
    points = [line.split("kill point: ")[1] for line in trace.splitlines() if "kill point:" in line]
    return points[points.index("end:validated@1") :]


@pytest.mark.parametrize(
    "steps",
    [6, pytest.param(5, marks=pytest.mark.slow)],  # 6: the final step has a checkpoint
)
def test_a_kill_anywhere_in_the_end_of_a_run_is_finished_exactly_once(tmp_path, data, steps):
    budget = f"train.max_steps={steps}"
    reference = train(data, tmp_path / "reference", budget, kill="trace")
    assert reference.returncode == 0, reference.stderr
    expected = records(tmp_path / "reference")
    assert [r["step"] for r in expected if r["kind"] == "val"] == [4, steps]
    points = end_points(reference.stderr)
    assert {"end:validated@1", "end:saved@1", "end:plotted@1"} <= set(points)
    assert any(p.startswith("checkpoint:committed") for p in points)
    best = (tmp_path / "reference" / "checkpoints" / "best").readlink()

    def kill_then_rerun(point):
        run = tmp_path / point.replace(":", "-").replace("@", "-")
        killed = train(data, run, budget, kill=point)
        assert killed.returncode == -9, f"{point}: {killed.stderr[-2000:]}"
        again = train(data, run, budget)
        assert again.returncode == 0, f"{point}: {again.stderr[-2000:]}"
        return run

    with ThreadPoolExecutor(2) as pool:  # two processes at a time
        runs = list(pool.map(kill_then_rerun, points))
    for point, run in zip(points, runs, strict=True):
        assert records(run) == expected, point  # every record once, the final val included
        assert (run / "loss.png").stat().st_size > 10_000, point
        meta = json.loads((run / "checkpoints" / "latest" / "meta.json").read_text())
        assert (meta["step"], meta["stop_reason"]) == (steps, "budget"), point
        assert (run / "checkpoints" / "best").readlink() == best, point
        assert leftovers(run) == [], point


def test_a_kill_during_overwrite_puts_the_earlier_run_back(tmp_path, data):
    run = tmp_path / "run"
    assert train(data, run, "train.max_steps=3").returncode == 0
    before = records(run)
    # Killed after setting the old run aside, and after the new run's first checkpoint
    # was written but before it became `latest`: the old run is the run.
    for point in ("overwrite:set-aside", "checkpoint:written"):
        killed = train(data, run, "train.max_steps=6", "--overwrite", kill=point)
        assert killed.returncode == -9, killed.stderr[-2000:]
        again = train(data, run, "train.max_steps=3")  # the old run's own command
        assert again.returncode == 0, again.stderr[-2000:]
        assert "restored the earlier run" in again.stderr
        assert "finished already" in again.stderr
        assert records(run) == before
        assert leftovers(run) == []
    # Killed once the new run has its checkpoint: the new run is the run; its rerun
    # finishes it and removes the old one, saying so.
    killed = train(data, run, "train.max_steps=6", "--overwrite", kill="checkpoint:committed")
    assert killed.returncode == -9
    again = train(data, run, "train.max_steps=6")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "removed" in again.stderr and "interrupted --overwrite" in again.stderr
    assert [r["step"] for r in records(run) if r["kind"] == "val"] == [4, 6]
    assert leftovers(run) == []
