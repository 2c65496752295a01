"""Exact resume: a run killed (SIGKILL) or stopped (SIGTERM) at a random step and resumed
writes the same metrics, bit for bit, as one that was never interrupted (CPU)."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import TINY_OVERRIDES

from tinylm.config import load_config
from tinylm.training.trainer import train

# Dropout, accumulation, a warmup+cosine schedule and periodic validation: every piece of
# state a checkpoint must carry (torch RNG, loader position, AdamW moments, counters).
STEPS = 12
ARGS = [*TINY_OVERRIDES, "model.dropout=0.1", "train.batch_size=4", f"train.max_steps={STEPS}",
        "train.checkpoint_interval=3", "train.eval_interval=5", "train.eval_batches=1",
        "train.grad_accum=2", "optim.schedule=cosine", "optim.warmup=4",
        "train.num_threads=2", "train.tensorboard=false"]  # fmt: skip


def records(run):
    """metrics.jsonl without the fields that measure time."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if k not in ("elapsed_s", "tokens_per_s")}
        for line in lines
    ]


@pytest.fixture(scope="module")
def reference(wiki_data, tmp_path_factory):
    """The uninterrupted run."""
    run = tmp_path_factory.mktemp("ref") / "run"
    train(load_config(None, [f"data.path={wiki_data}", *ARGS]), run)
    return records(run)


def start(wiki_data, run, *extra):
    cmd = [sys.executable, "-m", "tinylm", "train", f"data.path={wiki_data}", *ARGS, *extra,
           "--out", str(run)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc, run, step):
    """Block until the run has logged `step` (or has ended)."""
    while proc.poll() is None:
        if (run / "metrics.jsonl").exists():
            steps = [r["step"] for r in records_partial(run) if r["kind"] == "train"]
            if steps and steps[-1] >= step:
                return steps[-1]
        time.sleep(0.01)
    raise AssertionError(f"run ended before step {step}: {proc.stderr.read()}")


def records_partial(run):
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def latest_step(run):
    return json.loads((run / "checkpoints" / "latest" / "meta.json").read_text())["step"]


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(wiki_data, tmp_path, reference):
    run = tmp_path / "run"
    kill_at = random.randint(4, STEPS - 2)
    proc = start(wiki_data, run)
    seen = wait_for_step(proc, run, kill_at)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt_step = latest_step(run)
    assert ckpt_step < STEPS, "the run finished before it could be killed"

    resumed = subprocess.run(
        [sys.executable, "-m", "tinylm", "train", f"data.path={wiki_data}", *ARGS[-2:],
         "--out", str(run), "--resume"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {ckpt_step}" in resumed.stderr
    got = records(run)
    print(f"killed at step >= {seen} (target {kill_at}), resumed from checkpoint step "
          f"{ckpt_step}: {len(got)} records identical to the uninterrupted run")  # fmt: skip
    assert got == reference
    assert [r["step"] for r in got if r["kind"] == "train"] == list(range(1, STEPS + 1))


def test_sigterm_saves_then_rerunning_the_command_continues(wiki_data, tmp_path, reference):
    run = tmp_path / "run"
    proc = start(wiki_data, run)
    wait_for_step(proc, run, random.randint(2, STEPS - 3))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM at step" in err and "Traceback" not in err
    meta = json.loads((run / "checkpoints" / "latest" / "meta.json").read_text())
    assert meta["interrupted"] and meta["step"] == records(run)[-1]["step"] < STEPS

    again = start(wiki_data, run)  # the very same command: auto-resume
    _, err = again.communicate()
    assert again.returncode == 0, err
    assert f"resumed at step {meta['step']}" in err
    assert records(run) == reference
