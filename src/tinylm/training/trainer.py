"""The training loop: batches -> loss -> AdamW step, with validation, metrics and a checkpoint.

    for each step until the budget (epochs, steps or minutes) runs out:
        batch (B, block_size) -> logits -> next_token_loss -> backward -> clip -> AdamW
        every log_interval steps:  a "train" record in metrics.jsonl
        every eval_interval steps: validation loss on fixed batches, a "val" record
    at the end (or on Ctrl-C): validation, checkpoints/latest, loss.png

Everything a user can get wrong (config, data, tokenizer, an existing run) is checked
before the run directory is touched; a run that fails with such an error before its
checkpoint is written leaves no run directory behind.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinylm.config import Config, save_config
from tinylm.data.dataset import PreparedDataset
from tinylm.data.loader import BlockLoader
from tinylm.data.tokenizer import Tokenizer, get_tokenizer
from tinylm.device import resolve_device
from tinylm.errors import TinyLMError, is_out_of_memory
from tinylm.evaluate import EvalResult, evaluate
from tinylm.loss import chunked_next_token_loss
from tinylm.model import GPT
from tinylm.plots import plot_losses
from tinylm.precision import autocast, grad_scaler, maybe_compile, resolve_precision
from tinylm.progress import progress
from tinylm.rundir import RECENT_STEPS, RunDir
from tinylm.training.checkpoint import save_checkpoint
from tinylm.training.optim import build_optimizer


@dataclass
class TrainResult:
    run: RunDir
    steps: int
    tokens: int
    train_seconds: float
    """Wall time of the training steps, validation excluded."""
    train_loss: float
    """Mean training loss of the last RECENT_STEPS steps."""
    val: EvalResult | None
    interrupted: bool


def train(config: Config, out: Path, overwrite: bool = False) -> TrainResult:
    """Train a model as `config` says and write the run directory `out`."""
    run = _check_run_dir(Path(out), overwrite)
    trainer = Trainer(config, run)  # validates data, tokenizer and model before any write
    # An earlier run being overwritten is kept aside until this one has its checkpoint.
    previous = run.path.parent / f".{run.path.name}.previous-{os.getpid()}"
    if run.path.exists():
        run.path.rename(previous)
    run.path.mkdir(parents=True)
    try:
        result = trainer.fit()
    except BaseException as err:
        if isinstance(err, TinyLMError) or not run.latest_checkpoint.exists():
            shutil.rmtree(run.path, ignore_errors=True)
            if previous.exists():
                previous.rename(run.path)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return result


class Trainer:
    def __init__(self, config: Config, run: RunDir) -> None:
        self.config, self.run = config, run
        t = config.train
        _seed_everything(t.seed)
        if t.num_threads > 0:
            torch.set_num_threads(t.num_threads)
        self.device = resolve_device(t.device)
        self.precision = resolve_precision(t.precision, self.device)

        self.dataset = PreparedDataset.open(config.data.path)
        self.tokenizer: Tokenizer = get_tokenizer(self.dataset.tokenizer_name)
        self.dataset.check_tokenizer(
            self.tokenizer.fingerprint, self.tokenizer.name, "the installed tokenizer"
        )
        if config.model.vocab_size != self.tokenizer.vocab_size:
            raise TinyLMError(
                f"model.vocab_size={config.model.vocab_size} but {self.dataset.path} uses "
                f"{self.tokenizer.name} with {self.tokenizer.vocab_size} tokens; "
                f"set model.vocab_size={self.tokenizer.vocab_size}"
            )
        self.loader = BlockLoader(
            self.dataset.tokens(config.data.train_split),
            config.model.block_size,
            t.batch_size,
            t.seed,
        )
        if self.loader.num_blocks == 0:
            raise TinyLMError(
                f"{self.dataset.path}: the {config.data.train_split} split has fewer tokens than "
                f"one block of {config.model.block_size}; use more data or a smaller "
                "model.block_size"
            )
        self.val_tokens = (
            self.dataset.tokens(config.data.val_split) if config.data.val_split else None
        )
        if self.val_tokens is not None and len(self.val_tokens) < 2:
            _print(f"note: the {config.data.val_split} split is empty; training without validation")
            self.val_tokens = None

        self.model = GPT(config.model).to(self.device)
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scaler = grad_scaler(self.precision, self.device)  # fp16 only; a no-op otherwise
        self.forward_model = maybe_compile(self.model, t.compile)  # self.model is saved
        self.planned_steps = _planned_steps(config, self.loader.batches_per_epoch)

        self.step = self.tokens_seen = 0
        self.loss = math.nan
        self.recent_losses: deque[float] = deque(maxlen=RECENT_STEPS)
        self.val: EvalResult | None = None
        self.val_step = -1
        self.start = 0.0
        self.eval_seconds = 0.0  # excluded from tokens/s, which measures training alone

    def fit(self) -> TrainResult:
        t, run, planned_steps = self.config.train, self.run, self.planned_steps
        save_config(self.config, run.config)
        _print(
            f"model: {self.model.num_parameters():,} parameters | data: "
            f"{self.loader.num_blocks:,} blocks of {self.config.model.block_size} tokens, "
            f"{self.loader.batches_per_epoch:,} batches/epoch | device: {self.device} "
            f"({self.precision}) | "
            f"run: {run.path}"
        )
        interrupted = False
        self.start = time.monotonic()
        deadline = self.start + t.max_minutes * 60 if t.max_minutes > 0 else math.inf
        bar_total = planned_steps if planned_steps < sys.maxsize else None
        self.model.train()
        with open(run.metrics, "w") as self.metrics, progress(bar_total, "train", "step") as bar:
            try:
                while self.step < planned_steps and time.monotonic() < deadline:
                    self._step()
                    if t.eval_interval and self.step % t.eval_interval == 0:
                        self._validate()
                    elapsed = time.monotonic() - self.start
                    eta = min(
                        (planned_steps - self.step) * elapsed / self.step,
                        deadline - time.monotonic(),
                    )
                    if math.isfinite(deadline):  # a time budget: re-estimate the bar's length
                        bar.total = min(planned_steps, self.step + int(eta * self.step / elapsed))
                    bar.update(1)
                    bar.set_postfix_str(
                        f"loss {self._recent_loss():.3f}"
                        + (f" | val {self.val.loss:.3f}" if self.val else "")
                        + f" | {self._rate():,.0f} tok/s | ETA {_duration(eta)}",
                        refresh=False,
                    )
            except KeyboardInterrupt:
                interrupted = True
                _print(f"interrupted at step {self.step}: saving a checkpoint")
            bar.total = self.step  # the budget that ended the run may not be the planned one
            bar.refresh()
            train_seconds = time.monotonic() - self.start - self.eval_seconds
            if self.step:
                self._validate()  # the final measurement, unless this step already had one

        meta = {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "train_seconds": train_seconds,
            "elapsed_s": time.monotonic() - self.start,
            "loader": self.loader.state_dict(),
            "train_loss": self._recent_loss(),
            "train_loss_steps": len(self.recent_losses),
            "last_step_loss": self.loss,
            "val": self.val.to_dict() if self.val else None,
            "dataset": str(self.dataset.path),
            "tokenizer": {"name": self.tokenizer.name, "fingerprint": self.tokenizer.fingerprint},
            "num_parameters": self.model.num_parameters(),
            "interrupted": interrupted,
        }
        save_checkpoint(run.latest_checkpoint, self.model, self.config, meta)
        plot_losses([run], run.loss_plot)
        return TrainResult(
            run,
            self.step,
            self.tokens_seen,
            train_seconds,
            self._recent_loss(),
            self.val,
            interrupted,
        )

    def _step(self) -> None:
        """One AdamW update on the next batch, and its metrics record."""
        batch = self.loader.next_batch().to(self.device)  # (B, T)
        try:
            with autocast(self.precision, self.device):
                loss = chunked_next_token_loss(self.forward_model, batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        except RuntimeError as err:  # torch.OutOfMemoryError is one
            if is_out_of_memory(err):
                raise TinyLMError(
                    f"out of memory at batch size {batch.shape[0]} x {batch.shape[1]} tokens; "
                    "lower train.batch_size (or model.n_embd / model.block_size)"
                ) from None
            raise
        clip = self.config.optim.grad_clip
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), clip if clip > 0 else math.inf
        )  # the norm before clipping
        self.scaler.step(self.optimizer)  # skips the step if fp16 gradients overflowed
        self.scaler.update()

        self.step += 1
        self.tokens_seen += batch.numel()
        self.loss = loss.item()
        self.recent_losses.append(self.loss)
        if self.step % self.config.train.log_interval == 0 or self.step == self.planned_steps:
            loader = self.loader
            self._record(
                kind="train",
                epoch=loader.epoch + loader.batch_in_epoch / loader.batches_per_epoch,
                loss=self.loss,
                lr=self.optimizer.param_groups[0]["lr"],
                grad_norm=float(grad_norm),
                tokens_per_s=self._rate(),
            )

    def _validate(self) -> None:
        """Validation loss on the fixed val batches, once per step at most."""
        if self.val_tokens is None or self.val_step == self.step:
            return
        eval_start = time.monotonic()
        self.val = evaluate(
            self.model,
            self.val_tokens,
            self.config.model.block_size,
            self.config.train.batch_size,
            self.device,
            self.tokenizer.token_bytes,
            max_batches=self.config.train.eval_batches,
        )
        self.val_step = self.step
        self.eval_seconds += time.monotonic() - eval_start
        self._record(
            kind="val",
            val_loss=self.val.loss,
            val_ppl=self.val.perplexity,
            val_bpb=self.val.bits_per_byte,
        )

    def _recent_loss(self) -> float:
        return sum(self.recent_losses) / len(self.recent_losses) if self.recent_losses else math.nan

    def _rate(self) -> float:
        seconds = time.monotonic() - self.start - self.eval_seconds
        return self.tokens_seen / seconds if seconds > 0 else 0.0

    def _record(self, **fields: Any) -> None:
        record = {
            "kind": fields.pop("kind"),
            "step": self.step,
            "tokens": self.tokens_seen,
            "elapsed_s": time.monotonic() - self.start,
            **fields,
        }
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()


def _planned_steps(config: Config, batches_per_epoch: int) -> int:
    limits = []
    if config.train.epochs > 0:
        limits.append(math.ceil(config.train.epochs * batches_per_epoch))
    if config.train.max_steps > 0:
        limits.append(config.train.max_steps)
    return min(limits) if limits else sys.maxsize  # time budget only


def _check_run_dir(path: Path, overwrite: bool) -> RunDir:
    """Refuse to clobber a run (unless asked) or a directory that is not a run."""
    run = RunDir(path)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise TinyLMError(
                f"{path}: run directory already exists; pass --overwrite or choose another --out"
            )
        if not run.config.exists():
            raise TinyLMError(f"{path}: not a tinylm run directory; refusing to overwrite it")
    return run


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _print(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
