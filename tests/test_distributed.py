"""torchrun with 2 processes on CPU (gloo): DDP and FSDP2 train as one process does with the
same global batch, ranks read disjoint data, and checkpoints move between world sizes.

Tolerances: the runs differ only in floating-point summation order (gradients averaged
over ranks, each rank's output layer summing half the rows, the validation sums added over
ranks), so fp32 losses agree to a few units in the last place. Measured maxima over
these tests (lr 1e-2, 2 accumulated micro-batches, losses 10.8 to 9.4): train loss 4.3e-6,
val loss 5.1e-6; asserted: 2e-5 for both. Gradient norms are compared
loosely (1e-3 relative): an fp32 norm of the 1.6M-element output-layer gradient carries
~1e-4 relative rounding that depends on how it is split (FSDP2 takes it per shard).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES

from tinylm.cli import main
from tinylm.config import load_config
from tinylm.data.loader import BlockLoader
from tinylm.distributed import batch_split
from tinylm.errors import TinyLMError
from tinylm.training.trainer import train

TRAIN_TOL, VAL_TOL, GRAD_NORM_RTOL = 2e-5, 2e-5, 1e-3
STEPS = 8
# Global batch 16 = batch_size 8 x grad_accum 2; two processes: 4 each, accumulated twice.
ARGS = [*TINY_OVERRIDES, "model.n_layer=2", "train.batch_size=8", "train.grad_accum=2",
        f"train.max_steps={STEPS}", "train.eval_interval=4", "train.eval_batches=3",
        "train.checkpoint_interval=0", "train.precision=fp32", "train.num_threads=1",
        "train.tensorboard=false", "optim.lr=1e-2"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(wiki_data, tmp_path_factory):
    """The single-process run every distributed run is compared with."""
    out = tmp_path_factory.mktemp("dist") / "single"
    train(load_config(None, [f"data.path={wiki_data}", *ARGS]), out)
    return out


def torchrun(*args, nproc=2, wait=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc), "-m", "tinylm", "train", *map(str, args)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per rank on a 2-core box
    if not wait:
        return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


def records(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def assert_same_curve(got, want):
    got, want = records(got), records(want)
    assert [(r["kind"], r["step"], r["tokens"]) for r in got] == [
        (r["kind"], r["step"], r["tokens"]) for r in want
    ]
    train_diff = val_diff = 0.0
    for g, w in zip(got, want, strict=True):
        if g["kind"] == "train":
            train_diff = max(train_diff, abs(g["loss"] - w["loss"]))
            assert g["grad_norm"] == pytest.approx(w["grad_norm"], rel=GRAD_NORM_RTOL)
        else:
            val_diff = max(val_diff, abs(g["val_loss"] - w["val_loss"]))
    print(f"max |train loss diff| {train_diff:.2e}, max |val loss diff| {val_diff:.2e}")
    assert train_diff <= TRAIN_TOL and val_diff <= VAL_TOL
    val = [r["val_loss"] for r in want if r["kind"] == "val"]
    assert len(val) >= 2 and val[-1] < val[0] - 0.1  # a curve that moves, not a flat line


# --- the global batch and the data each rank reads (no processes) ----------------------


def test_global_batch_splits_over_ranks_or_says_how_to_fix_it():
    assert batch_split(32, 1, 0, 1) == (32, 1)  # one process: exactly as before
    assert batch_split(8, 2, 0, 2) == (4, 2)  # batch_size splits, accumulation stays
    assert batch_split(32, 1, 4, 2) == (4, 4)  # micro_batch_size fixed: accumulate more
    assert batch_split(32, 1, 4, 8) == (4, 1)
    with pytest.raises(TinyLMError, match="batch_size=6 does not split evenly over 4"):
        batch_split(6, 1, 0, 4)
    with pytest.raises(TinyLMError, match="global batch of 32 .* 2 processes x .*=5"):
        batch_split(32, 1, 5, 2)


def test_each_step_reads_the_same_sequences_with_any_world_size():
    """Global batch 12 as 1 x 12, 2 x 6, 3 x 2 x 2 accumulated, 4 x 3: step by step the same
    set of blocks, each rank a disjoint part; then a position saved with 3 ranks resumes
    with 1 and 2 on the same sequences."""
    tokens = np.arange(60 * 4, dtype=np.uint16)  # 60 blocks of 4

    def steps(world, micro, accum, n, loaders=None):
        loaders = loaders or [BlockLoader(tokens, 4, micro, 7, r, world) for r in range(world)]
        out = []
        for _ in range(n):
            parts = [torch.cat([ld.next_batch() for _ in range(accum)])[:, 0] for ld in loaders]
            union = set(torch.cat(parts).tolist())
            assert len(union) == sum(len(p) for p in parts) == 12  # disjoint, whole batch
            out.append(union)
        return out, loaders

    want, _ = steps(1, 12, 1, 8)  # into the second epoch (5 steps per epoch)
    for world, micro, accum in ((2, 6, 1), (3, 2, 2), (4, 3, 1)):
        assert steps(world, micro, accum, 8)[0] == want
    _, three = steps(3, 2, 2, 3)
    state = three[0].state_dict()  # rank 0's state stands for all (same position)
    for world, micro, accum in ((1, 12, 1), (2, 3, 2)):
        loaders = [BlockLoader(tokens, 4, micro, 7, r, world) for r in range(world)]
        for ld in loaders:
            ld.load_state_dict(state)
        assert steps(world, micro, accum, 5, loaders)[0] == want[3:]


def test_a_position_inside_the_new_runs_micro_step_is_refused():
    tokens = np.arange(10 * 4, dtype=np.uint16)  # 10 blocks: batches of 4, 4, 2 per epoch
    saved = BlockLoader(tokens, 4, 4, seed=0)
    for _ in range(4):
        saved.next_batch()  # epoch 1, 4 sequences in
    two_ranks = BlockLoader(tokens, 4, 4, seed=0, rank=1, world_size=2)  # 8 per micro-step
    with pytest.raises(TinyLMError, match="4 sequences into epoch 1 is not a whole number"):
        two_ranks.load_state_dict(saved.state_dict())


def test_an_uneven_split_is_one_line_before_any_process_group(wiki_data, tmp_path, monkeypatch,
                                                                capsys):  # fmt: skip
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    code = main(["train", f"data.path={wiki_data}", *ARGS, "train.batch_size=7",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "train.batch_size=7 does not split evenly over 2 processes" in err
    assert not (tmp_path / "run").exists()


# --- real torchrun launches --------------------------------------------------------------


def test_ddp_two_ranks_train_as_one_process(wiki_data, reference, tmp_path):
    out = tmp_path / "ddp"
    proc = torchrun(f"data.path={wiki_data}", *ARGS, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "batch: 16 sequences = 2 processes (ddp) x 4 x 2 accumulated" in proc.stderr
    assert proc.stderr.count("model: ") == 1 and proc.stdout.count("trained ") == 1  # rank 0
    assert_same_curve(out, reference)
    saved = json.loads((out / "checkpoints" / "latest" / "meta.json").read_text())
    assert saved["step"] == STEPS and saved["tokens_seen"] == STEPS * 16 * 32


def test_fsdp_two_ranks_stop_together_and_resume_with_one_or_two(wiki_data, reference,
                                                                  tmp_path):  # fmt: skip
    """FSDP2 on 2 ranks; SIGTERM reaches rank 1 only, yet both ranks stop after the same
    step and save one consolidated checkpoint; resumed with 1 process and with 2 ranks,
    both continue the single-process curve."""
    out = tmp_path / "fsdp"
    proc = torchrun(f"data.path={wiki_data}", *ARGS, "train.parallel=fsdp", "--out", out,
                    wait=False)  # fmt: skip
    rank1 = worker_with_rank(proc.pid, 1)
    while not any(r["kind"] == "train" for r in records_so_far(out)):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    os.kill(rank1, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    stopped = json.loads((out / "checkpoints" / "latest" / "meta.json").read_text())
    assert err.count("SIGTERM at step") == 1, err
    assert stopped["interrupted"] and stopped["step"] == records(out)[-1]["step"] < STEPS, err
    assert proc.returncode != 0  # torchrun reports the ranks' exit 143

    two = tmp_path / "fsdp-resumed-on-2"
    shutil.copytree(out, two, symlinks=True)
    one = train(load_config(out / "config.yaml"), out, resume=True)  # this process
    assert one.resumed_from == stopped["step"] and one.steps == STEPS
    assert_same_curve(out, reference)
    proc = torchrun("--out", two, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert f"resumed at step {stopped['step']}" in proc.stderr
    assert_same_curve(two, reference)
    # The checkpoint is the ordinary single-file format: eval reads it as any other.
    from tinylm.training.checkpoint import load_checkpoint

    model = load_checkpoint(two).model
    assert not any(type(p).__name__ == "DTensor" for p in model.parameters())


def test_an_uneven_split_under_torchrun_is_reported_once(wiki_data, tmp_path):
    proc = torchrun(f"data.path={wiki_data}", *ARGS, "train.micro_batch_size=3",
                    "--out", tmp_path / "run")  # fmt: skip
    assert proc.returncode != 0
    assert proc.stderr.count("tinylm train: error: the global batch of 16 sequences") == 1
    assert not (tmp_path / "run").exists()


def records_so_far(run):
    """metrics.jsonl as far as it is written (a last line may be partial)."""
    path = Path(run) / "metrics.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def worker_with_rank(launcher_pid, rank, timeout=60.0):
    """The pid of torchrun's worker process with RANK=rank (read from /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{launcher_pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={rank}".encode() in environ:
                    return int(child)
        time.sleep(0.05)
    raise AssertionError(f"no worker with RANK={rank} under pid {launcher_pid}")
