"""Checkpoint save / load time and size for the study's models (seed-d128, seed-d256).

    flock /tmp/tinylm-heavy.lock .venv/bin/python bench/checkpoint_io.py [--repeats 5]

Each model gets one real AdamW step (so the moments exist), then the trainer's own code
paths are timed: a save (write, fsync, rename, re-point `latest`), a load for evaluation
(load_checkpoint: weights + meta) and a load for resuming (weights, AdamW moments, RNG
states into an existing model and optimizer). Medians of --repeats runs; the files are
written to --dir (default: a temporary directory on the same disk as the repo).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tinylm.config import load_config
from tinylm.model import GPT
from tinylm.training.checkpoint import (
    STATE,
    WEIGHTS,
    CheckpointStore,
    load_checkpoint,
    load_optimizer_tensors,
    load_weights,
    optimizer_tensors,
    read_state,
)
from tinylm.training.optim import build_optimizer
from tinylm.training.rng import capture_rng


def bench(preset: str, root: Path, repeats: int) -> dict[str, float]:
    cfg = load_config(None, [f"model={preset}"])
    torch.manual_seed(0)
    model = GPT(cfg.model)
    opt = build_optimizer(model, cfg.optim)
    idx = torch.randint(0, cfg.model.vocab_size, (2, 32))
    model(idx).float().logsumexp(-1).mean().backward()
    opt.step()
    store = CheckpointStore(root / preset, keep=2)
    saves, eval_loads, resume_loads = [], [], []
    for step in range(1, repeats + 1):
        t0 = time.perf_counter()
        rng_json, rng_tensors = capture_rng()
        state = {**optimizer_tensors(model, opt), **rng_tensors}
        path = store.save(step, model, cfg, {"step": step, "rng": rng_json}, state)
        store.prune()
        saves.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        load_checkpoint(path)
        eval_loads.append(time.perf_counter() - t0)

        other = GPT(cfg.model)
        other_opt = build_optimizer(other, cfg.optim)
        t0 = time.perf_counter()
        load_weights(path, other)
        load_optimizer_tensors(path, other, other_opt, read_state(path))
        resume_loads.append(time.perf_counter() - t0)
    return {
        "params": model.num_parameters(),
        "weights_mb": (path / WEIGHTS).stat().st_size / 1e6,
        "state_mb": (path / STATE).stat().st_size / 1e6,
        "save_s": statistics.median(saves),
        "load_eval_s": statistics.median(eval_loads),
        "load_resume_s": statistics.median(resume_loads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=args.dir or Path.cwd()))
    try:
        print("| model | params | model.safetensors | state.safetensors | save | load (eval) "
              "| load (resume) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for preset in ("seed-d128", "seed-d256"):
            r = bench(preset, root, args.repeats)
            print(f"| {preset} | {r['params']:,} | {r['weights_mb']:.1f} MB | "
                  f"{r['state_mb']:.1f} MB | {r['save_s']:.2f} s | {r['load_eval_s']:.2f} s | "
                  f"{r['load_resume_s']:.2f} s |")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
