"""The training loop: batches -> loss -> AdamW step, with validation, metrics and a checkpoint.

for each step until the budget (epochs, steps or minutes) runs out:
    batch (B, block_size) -> logits -> next_token_loss -> backward -> clip -> AdamW
    every log_interval steps:  a "train" record in metrics.jsonl
    every eval_interval steps: validation loss on fixed batches, a "val" record
at the end (or on Ctrl-C): validation, checkpoints/latest, loss.png
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinylm.config import Config, save_config
from tinylm.data.dataset import PreparedDataset
from tinylm.data.loader import BlockLoader
from tinylm.data.tokenizer import get_tokenizer
from tinylm.device import resolve_device
from tinylm.errors import TinyLMError
from tinylm.evaluate import EvalResult, evaluate
from tinylm.loss import next_token_loss
from tinylm.model import GPT
from tinylm.plots import plot_losses
from tinylm.progress import progress
from tinylm.rundir import RunDir
from tinylm.training.checkpoint import save_checkpoint
from tinylm.training.optim import build_optimizer


@dataclass
class TrainResult:
    run: RunDir
    steps: int
    tokens: int
    elapsed_s: float
    final_loss: float
    val: EvalResult | None
    interrupted: bool


def train(config: Config, out: Path, overwrite: bool = False) -> TrainResult:
    run = _new_run_dir(Path(out), overwrite)
    t = config.train
    _seed_everything(t.seed)
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    device = resolve_device(t.device)

    dataset = PreparedDataset.open(config.data.path)
    tokenizer = get_tokenizer(dataset.tokenizer_name)
    dataset.check_tokenizer(tokenizer.fingerprint, tokenizer.name, "the installed tokenizer")
    if config.model.vocab_size != tokenizer.vocab_size:
        raise TinyLMError(
            f"model.vocab_size={config.model.vocab_size} but {dataset.path} uses {tokenizer.name} "
            f"with {tokenizer.vocab_size} tokens; set model.vocab_size={tokenizer.vocab_size}"
        )
    loader = BlockLoader(
        dataset.tokens(config.data.train_split), config.model.block_size, t.batch_size, t.seed
    )
    if loader.num_blocks == 0:
        raise TinyLMError(
            f"{dataset.path}: the {config.data.train_split} split has fewer tokens than one block "
            f"of {config.model.block_size}; use more data or a smaller model.block_size"
        )
    val_tokens = dataset.tokens(config.data.val_split) if config.data.val_split else None
    if val_tokens is not None and len(val_tokens) < 2:
        _print(f"note: the {config.data.val_split} split is empty; training without validation")
        val_tokens = None

    model = GPT(config.model).to(device)
    optimizer = build_optimizer(model, config.optim)
    planned_steps = _planned_steps(config, loader.batches_per_epoch)
    deadline = time.monotonic() + t.max_minutes * 60 if t.max_minutes > 0 else math.inf

    run.path.mkdir(parents=True, exist_ok=True)
    save_config(config, run.config)
    _print(
        f"model: {model.num_parameters():,} parameters | data: {loader.num_blocks:,} blocks of "
        f"{config.model.block_size} tokens, {loader.batches_per_epoch:,} batches/epoch | "
        f"device: {device} | run: {run.path}"
    )

    step = tokens_seen = 0
    loss_value = math.nan
    val: EvalResult | None = None
    interrupted = False
    start = time.monotonic()
    model.train()
    bar_total = planned_steps if planned_steps < sys.maxsize else None
    with open(run.metrics, "w") as metrics, progress(bar_total, "train", unit="step") as bar:

        def validate() -> EvalResult | None:
            if val_tokens is None:
                return None
            result = evaluate(
                model,
                val_tokens,
                config.model.block_size,
                t.batch_size,
                device,
                tokenizer.token_bytes,
                max_batches=t.eval_batches,
            )
            _write(
                metrics,
                kind="val",
                step=step,
                tokens=tokens_seen,
                elapsed_s=time.monotonic() - start,
                val_loss=result.loss,
                val_ppl=result.perplexity,
                val_bpb=result.bits_per_byte,
            )
            return result

        try:
            while step < planned_steps and time.monotonic() < deadline:
                batch = loader.next_batch().to(device)
                loss = next_token_loss(model(batch), batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip = config.optim.grad_clip if config.optim.grad_clip > 0 else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()

                step += 1
                tokens_seen += batch.numel()
                loss_value = loss.item()
                elapsed = time.monotonic() - start
                rate = tokens_seen / elapsed
                if step % t.log_interval == 0 or step == planned_steps:
                    _write(
                        metrics,
                        kind="train",
                        step=step,
                        tokens=tokens_seen,
                        elapsed_s=elapsed,
                        epoch=loader.epoch + loader.batch_in_epoch / loader.batches_per_epoch,
                        loss=loss_value,
                        lr=optimizer.param_groups[0]["lr"],
                        grad_norm=float(grad_norm),
                        tokens_per_s=rate,
                    )
                if t.eval_interval and step % t.eval_interval == 0 and step < planned_steps:
                    val = validate()
                eta = min((planned_steps - step) * elapsed / step, deadline - time.monotonic())
                if math.isfinite(deadline):  # a time budget: re-estimate the bar's length
                    bar.total = min(planned_steps, step + int(eta * step / elapsed))
                bar.update(1)
                bar.set_postfix_str(
                    f"loss {loss_value:.3f}"
                    + (f" | val {val.loss:.3f}" if val else "")
                    + f" | {rate:,.0f} tok/s | ETA {_duration(eta)}",
                    refresh=False,
                )
        except KeyboardInterrupt:
            interrupted = True
            _print(f"interrupted at step {step}: saving a checkpoint")
        if step:
            val = validate() or val  # the final measurement, always

    elapsed = time.monotonic() - start
    meta = {
        "step": step,
        "tokens_seen": tokens_seen,
        "elapsed_s": elapsed,
        "loader": loader.state_dict(),
        "train_loss": loss_value,
        "val": val.to_dict() if val else None,
        "dataset": str(dataset.path),
        "tokenizer": {"name": tokenizer.name, "fingerprint": tokenizer.fingerprint},
        "num_parameters": model.num_parameters(),
        "interrupted": interrupted,
    }
    save_checkpoint(run.latest_checkpoint, model, config, meta)
    plot_losses([run], run.loss_plot)
    return TrainResult(run, step, tokens_seen, elapsed, loss_value, val, interrupted)


def _planned_steps(config: Config, batches_per_epoch: int) -> int:
    limits = []
    if config.train.epochs > 0:
        limits.append(math.ceil(config.train.epochs * batches_per_epoch))
    if config.train.max_steps > 0:
        limits.append(config.train.max_steps)
    return min(limits) if limits else sys.maxsize  # time budget only


def _new_run_dir(path: Path, overwrite: bool) -> RunDir:
    run = RunDir(path)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise TinyLMError(
                f"{path}: run directory already exists; pass --overwrite or choose another --out"
            )
        if not run.config.exists():
            raise TinyLMError(f"{path}: not a tinylm run directory; refusing to overwrite it")
        shutil.rmtree(path)
    return run


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _write(file: Any, **record: Any) -> None:
    file.write(json.dumps(record) + "\n")
    file.flush()


def _print(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
