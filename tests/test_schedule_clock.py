"""A schedule on the clock, through the real trainer: warmup and cooldown placed in the
minutes budget, and a run stopped (SIGTERM) and resumed continues the schedule where it
stopped instead of starting it again."""

import itertools
import json
import signal
import subprocess
import sys

from conftest import TINY_OVERRIDES
from test_resume import wait_for_step

from tinylm.config import load_config
from tinylm.training.schedule import build_schedule

BUDGET_MIN = 0.12  # 7.2 s of training
ARGS = [*TINY_OVERRIDES, "train.max_steps=0", "train.epochs=1000",
        f"train.max_minutes={BUDGET_MIN}",
        "train.batch_size=4", "train.eval_interval=0", "train.checkpoint_interval=0",
        "train.tensorboard=false", "train.num_threads=1", "optim.schedule=wsd",
        "optim.schedule_unit=time", "optim.warmup=0.1", "optim.decay_fraction=0.5",
        "optim.decay_shape=1-sqrt", "optim.min_lr_ratio=0.0"]  # fmt: skip


def test_time_schedule_spans_the_budget_and_survives_a_resume(wiki_data, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tinylm", "train", f"data.path={wiki_data}", *ARGS,
           "--out", str(run)]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, run, 5)
    meta = None
    while proc.poll() is None:  # stop it in its cooldown (past 60% of the budget)
        lrs = lr_records(run)
        if any(r["lr"] == 3e-3 for r in lrs) and lrs[-1]["lr"] < 0.8 * 3e-3:
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err
    meta = json.loads((run / "checkpoints" / "latest" / "meta.json").read_text())
    before = lr_records(run)
    resumed = subprocess.run(
        [sys.executable, "-m", "tinylm", "train", "--out", str(run), "--resume"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    after = lr_records(run)[len(before) :]
    peak = 3e-3
    lrs = [r["lr"] for r in before + after]
    print(f"{len(before)} steps, stopped at lr {before[-1]['lr']:.2e} "
          f"({meta['train_seconds']:.1f} s), resumed for {len(after)} steps, last lr "
          f"{lrs[-1]:.2e}")  # fmt: skip
    # Warmup from near 0, the peak, a cooldown that reaches ~0 when the time is up.
    assert lrs[0] < 0.5 * peak and max(lrs) == peak and lrs[-1] < 0.25 * peak
    # The resumed session continues the cooldown: no jump back to the peak or the warmup.
    assert after and all(a["lr"] <= before[-1]["lr"] for a in after)
    assert [r["lr"] for r in after] == sorted((r["lr"] for r in after), reverse=True)
    # Its first LR is the schedule at the recorded training time (plus one step's time).
    cfg = load_config(run / "config.yaml")
    s = build_schedule(cfg.optim, float("inf"), float("inf"), cfg.train.max_minutes)
    at_stop = s.lr_for(0, 0, meta["train_seconds"])
    assert at_stop - 0.1 * peak < after[0]["lr"] <= at_stop


def lr_records(run):
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if record["kind"] == "train":
            out.append(record)
    return out


def test_time_schedule_resumes_where_it_stopped_with_validation_time(wiki_data, tmp_path):
    """Validation takes time inside the budget (the max_minutes stop counts it): a resumed
    run continues the clock schedule from the time its checkpoint used, validation
    included, so the LR keeps falling across the resume instead of jumping back up."""
    from tinylm.training.trainer import train

    args = [f"data.path={wiki_data}", *TINY_OVERRIDES, "train.max_minutes=1",
            "train.batch_size=4", "train.eval_interval=1", "train.eval_batches=24",
            "train.tensorboard=false", "train.num_threads=1", "optim.schedule=wsd",
            "optim.schedule_unit=time", "optim.decay_fraction=1.0",
            "optim.min_lr_ratio=0.0"]  # fmt: skip
    run = tmp_path / "run"
    train(load_config(None, [*args, "train.max_steps=4"]), run)
    before = [r["lr"] for r in lr_records(run)]
    train(load_config(None, [*args, "train.max_steps=8"]), run, resume=True)
    after = [r["lr"] for r in lr_records(run)][len(before) :]
    print(f"last LR before the resume {before[-1]:.6e}, first after {after[0]:.6e}")
    assert len(before) == len(after) == 4
    assert all(a > b for a, b in itertools.pairwise(before + after))  # falling throughout
