"""Exact resume: a run stopped (SIGTERM) and killed (SIGKILL) at random steps and resumed
writes the same metrics, bit for bit, as one that was never interrupted (CPU)."""

import json
import random
import signal
import subprocess
import sys
import time

from conftest import TINY_OVERRIDES

from tinylm.config import load_config
from tinylm.training.trainer import train

# Dropout, accumulation, a warmup+cosine schedule and periodic validation: every piece of
# state a checkpoint must carry (torch RNG, loader position, AdamW moments, counters).
# One thread: MKL may split a multi-threaded reduction differently from run to run on a
# loaded machine (last-bit differences even between two fresh runs); bit-identity is a
# property of the same computation, which one thread pins down.
STEPS = 12
PICK = random.SystemRandom()  # truly random steps: training reseeds the `random` module
ARGS = [*TINY_OVERRIDES, "model.dropout=0.1", "train.batch_size=4", f"train.max_steps={STEPS}",
        "train.checkpoint_interval=3", "train.eval_interval=5", "train.eval_batches=1",
        "train.grad_accum=2", "optim.schedule=cosine", "optim.warmup=4",
        "train.num_threads=1", "train.tensorboard=false"]  # fmt: skip


def test_stopped_killed_and_resumed_run_is_bit_identical(wiki_data, tmp_path):
    run = tmp_path / "run"
    train_cmd = [sys.executable, "-m", "tinylm", "train", f"data.path={wiki_data}", *ARGS,
                 "--out", str(run)]  # fmt: skip

    # 1. SIGTERM at a random step: the step finishes, a checkpoint is saved, exit 143.
    proc = subprocess.Popen(train_cmd, stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, run, PICK.randint(2, 4))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM at step" in err and "Traceback" not in err
    stopped = latest_meta(run)
    assert stopped["interrupted"] and stopped["step"] == records(run)[-1]["step"]

    # 2. The very same command continues the run; SIGKILL it at a later random step.
    proc = subprocess.Popen(train_cmd, stderr=subprocess.PIPE, text=True)
    seen = wait_for_step(proc, run, PICK.randint(min(stopped["step"] + 4, STEPS - 2), STEPS - 2))
    proc.kill()
    _, err = proc.communicate()
    assert f"resumed at step {stopped['step']}" in err
    killed_ckpt = latest_meta(run)["step"]
    assert stopped["step"] < killed_ckpt < STEPS, "the run should die between checkpoints"

    # 3. --resume finishes it.
    resumed = subprocess.run(
        [sys.executable, "-m", "tinylm", "train", "--out", str(run), "--resume"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {killed_ckpt}" in resumed.stderr

    # 4. The uninterrupted run, in this process.
    reference = tmp_path / "reference"
    train(load_config(None, [f"data.path={wiki_data}", *ARGS]), reference)
    got, want = records(run), records(reference)
    print(f"SIGTERM -> checkpoint at step {stopped['step']}; SIGKILL at step {seen} -> "
          f"resumed from step {killed_ckpt}; {len(got)} metrics records (train loss, lr, "
          f"grad norm, val loss per step) identical to the uninterrupted run")  # fmt: skip
    assert got == want
    assert [r["step"] for r in got if r["kind"] == "train"] == list(range(1, STEPS + 1))


def records(run):
    """metrics.jsonl without the fields that measure time (a killed run may leave a
    partial last line)."""
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        out.append({k: v for k, v in record.items() if k not in ("elapsed_s", "tokens_per_s")})
    return out


def wait_for_step(proc, run, step):
    """Block until the run has logged a train record of `step` or later."""
    while proc.poll() is None:
        if (run / "metrics.jsonl").exists():
            steps = [r["step"] for r in records(run) if r["kind"] == "train"]
            if steps and steps[-1] >= step:
                return steps[-1]
        time.sleep(0.01)
    raise AssertionError(f"run ended before step {step}: {proc.stderr.read()}")


def latest_meta(run):
    return json.loads((run / "checkpoints" / "latest" / "meta.json").read_text())
