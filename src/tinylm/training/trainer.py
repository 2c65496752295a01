"""The training loop: micro-batches -> loss -> AdamW step, with validation, checkpoints, metrics.

    for each step until a budget (epochs, steps, tokens, minutes) runs out:
        grad_accum micro-batches (B, block_size): forward, next-token loss, backward
        non-finite loss or gradient: skip the update, count it, stop after max_skipped_steps
        clip, set the scheduled lr, AdamW step
        every eval_interval steps / eval_interval_tokens: validation on fixed batches;
            a better val loss saves a checkpoint and points `best` at it;
            early_stop_patience validations without one stop the run
        every checkpoint_interval steps: a resumable checkpoint (`latest`)
        SIGINT / SIGTERM: finish the step, save, exit
    at the end: validation, checkpoint, loss.png

A checkpoint holds everything the loop's future depends on (weights, AdamW moments, step,
tokens, loader position, every RNG, counters), so on CPU a resumed run continues with
bit-identical losses. Everything a user can get wrong (config, data, tokenizer, a
checkpoint of another model) is checked before the run directory is touched; a new run
that fails before its first checkpoint leaves no run directory behind.

Under torchrun (docs/distributed.md) every rank runs this loop on its share of each
batch; `tinylm.distributed` holds all that differs (process group, DDP/FSDP2 wrapping,
gradient sync, collectives, gathering a full checkpoint), and rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from tinylm import distributed
from tinylm.atomic import remove_temporaries, write_atomic
from tinylm.config import Config, config_differences, config_from_dict, load_config
from tinylm.data.dataset import PreparedDataset
from tinylm.data.loader import BlockLoader, Prefetcher, eval_prefix
from tinylm.data.tokenizer import Tokenizer
from tinylm.device import resolve_device
from tinylm.errors import TinyLMError, is_out_of_memory
from tinylm.evaluate import EvalResult, evaluate
from tinylm.faults import kill_point
from tinylm.lock import hold_lock
from tinylm.loss import chunked_next_token_loss
from tinylm.model import GPT
from tinylm.plots import plot_losses
from tinylm.precision import (
    autocast,
    configure_threads,
    grad_scaler,
    maybe_compile,
    resolve_precision,
)
from tinylm.progress import progress
from tinylm.rundir import FINISHED, RECENT_STEPS, SUPERVISED_ENV, RunDir
from tinylm.training.checkpoint import (
    BEST,
    LATEST,
    CheckpointStore,
    check_compatible,
    load_checkpoint,
    load_optimizer_tensors,
    load_weights,
    optimizer_tensors,
    read_meta,
    read_state,
    resolve_checkpoint,
)
from tinylm.training.metrics import MetricsLog
from tinylm.training.optim import build_optimizer
from tinylm.training.rng import capture_rng, restore_rng, seed_everything
from tinylm.training.schedule import build_schedule


@dataclass
class TrainResult:
    run: RunDir
    steps: int
    tokens: int
    train_seconds: float
    """Wall time of the training steps, validation excluded (all sessions of the run)."""
    train_loss: float
    """Mean training loss of the last RECENT_STEPS steps."""
    val: EvalResult | None
    interrupted: bool
    signal: int = 0
    """The signal (SIGINT, SIGTERM) that stopped the run, if one did."""
    stop_reason: str = "budget"
    """'budget', 'early_stop' or 'signal'."""
    resumed_from: int | None = None
    """The step the run resumed from, if it did."""


def train(config: Config, out: Path, overwrite: bool = False, resume: bool = False) -> TrainResult:
    """Train a model as `config` says into the run directory `out`.

    An existing run is resumed from its latest checkpoint when `resume` is set or when
    its config is the same as this one (re-running a command continues it); otherwise
    it is refused unless `overwrite`. One process trains a run at a time: rank 0 holds
    the run's lock (tinylm.lock) for the whole command, and a second `tinylm train` on
    the same --out is refused.
    """
    run = RunDir(Path(out))
    if not distributed.env().is_main:  # ranks > 0 never write the run directory
        return _train(config, run, overwrite, resume)
    with hold_lock(run.path, "run"):
        # Holding the lock, anything half-done here is a dead writer's: finish or undo it.
        _recover_interrupted(run)
        return _train(config, run, overwrite, resume)


def _train(config: Config, run: RunDir, overwrite: bool, resume: bool) -> TrainResult:
    checkpoint = _resume_point(run, config, overwrite, resume)
    if checkpoint is not None and not resume:
        meta = read_meta(checkpoint)
        if meta.get("stop_reason") in FINISHED:
            # Re-running a finished run's command (a sweep does) changes nothing, except
            # the loss plot a kill after the final checkpoint may have kept from being drawn.
            if distributed.is_main() and not run.loss_plot.is_file():
                plot_losses([run], run.loss_plot)
            _print(
                f"{run.path}: finished already ({meta['stop_reason']} at step {meta['step']:,}); "
                "nothing to do (--resume with a larger budget continues it)"
            )
            return _finished_result(run, meta)
    fresh = checkpoint is None
    trainer = Trainer(config, run, checkpoint)  # validates everything before any write
    distributed.barrier()  # every rank has read the run directory before rank 0 changes it
    main = distributed.is_main()
    # An earlier run being overwritten is kept aside until this one has its checkpoint
    # (a kill in between: the next command on this --out puts it back).
    previous = _set_aside_path(run)
    if fresh and main:
        if run.path.exists():
            run.path.rename(previous)
            kill_point("overwrite:set-aside")
        run.path.mkdir(parents=True)
    try:
        result = trainer.fit()
    except BaseException:
        if main and fresh and trainer.store.target(LATEST) is None:
            shutil.rmtree(run.path, ignore_errors=True)
            if previous.exists():
                previous.rename(run.path)
        raise
    finally:
        if main:
            shutil.rmtree(previous, ignore_errors=True)  # gone already if it was put back
    return result


def _set_aside_path(run: RunDir) -> Path:
    """Where --overwrite keeps the earlier run until the new one has a checkpoint."""
    return run.path.parent / f".{run.path.name}.previous"


def _recover_interrupted(run: RunDir) -> None:
    """Undo or finish what a killed `tinylm train` on this run left half-done (under the
    run's lock, so no live writer owns it): an --overwrite's set-aside earlier run comes
    back unless the new run had reached its first checkpoint, and temporary files go."""
    # `.RUN.previous-PID`: the name before the lock made the PID unneeded.
    aside = re.compile(re.escape(f".{run.path.name}.previous") + r"(-[0-9]+)?")
    for previous in sorted(run.path.parent.glob(f".{run.path.name}.previous*")):
        if not previous.is_dir() or not aside.fullmatch(previous.name):
            continue
        if run.latest_checkpoint.exists():  # the new run took over: the old one is done
            shutil.rmtree(previous, ignore_errors=True)
            _print(f"note: removed {previous}, the earlier run an interrupted --overwrite "
                   f"of {run.path} replaced")  # fmt: skip
        else:
            shutil.rmtree(run.path, ignore_errors=True)
            previous.rename(run.path)
            _print(f"note: {run.path}: restored the earlier run that an interrupted "
                   "--overwrite had set aside (the new run had no checkpoint yet)")  # fmt: skip
    if run.path.is_dir():  # the run's files, checkpoints/ and each checkpoint's files
        for folder in (run.path, run.checkpoints, *run.checkpoints.glob("step-*")):
            remove_temporaries(folder)


def _finished_result(run: RunDir, meta: dict[str, Any]) -> TrainResult:
    val = meta.get("val")
    return TrainResult(
        run,
        meta["step"],
        meta["tokens_seen"],
        meta["train_seconds"],
        meta["train_loss"],
        EvalResult(**val) if val else None,
        interrupted=False,
        stop_reason=meta["stop_reason"],
        resumed_from=meta["step"],
    )


def resolve_model(config: Config) -> None:
    """Fill in what the model section leaves to others, so the saved config (and a rerun's
    comparison with it) holds the real values: train.init_from's shape, then the dataset's
    vocabulary for model.vocab_size=0. Calling it again changes nothing."""
    if config.train.init_from:
        meta = read_meta(resolve_checkpoint(Path(config.train.init_from)))
        config.model = config_from_dict(meta["config"]).model
    if config.model.vocab_size == 0:
        vocab_size = PreparedDataset.open(config.data.path).vocab_size
        config.model = dataclasses.replace(config.model, vocab_size=vocab_size)


def _resume_point(run: RunDir, config: Config, overwrite: bool, resume: bool) -> Path | None:
    """The checkpoint to continue from, None for a fresh start; or a clear refusal."""
    path = run.path
    if resume and overwrite:
        raise TinyLMError("--resume and --overwrite contradict each other; pass one")
    if not path.exists() or not any(path.iterdir()):
        if resume:
            raise TinyLMError(f"{path}: nothing to resume (no such run directory)")
        return None
    if not run.config.exists():
        raise TinyLMError(f"{path}: not a tinylm run directory; refusing to write into it")
    if overwrite:
        return None
    latest = run.latest_checkpoint
    has_checkpoint = latest.exists()
    if resume:
        if not has_checkpoint:
            raise TinyLMError(
                f"{path}: no checkpoint to resume from yet; start it again with --overwrite"
            )
        return resolve_checkpoint(latest)
    saved = load_config(run.config)
    resolve_model(config)  # as the run's config.yaml holds it
    if saved != config:
        diffs = config_differences(config, saved)
        raise TinyLMError(
            f"{path}: run directory already exists with another config ({', '.join(diffs[:3])} "
            "differ); pass --resume to continue it with these settings, --overwrite to start "
            "over, or choose another --out"
        )
    # Same config: re-running the command continues the run (or restarts one that died
    # before its first checkpoint).
    return resolve_checkpoint(latest) if has_checkpoint else None


class Trainer:
    def __init__(self, config: Config, run: RunDir, resume_from: Path | None = None) -> None:
        self.config, self.run = config, run
        t = config.train
        seed_everything(t.seed)
        configure_threads(t.num_threads)
        # Each rank's share of the global batch (an uneven split is an error before any
        # process group exists), then this rank's device in the group torchrun describes.
        self.world_size = distributed.env().world_size
        self.micro_batch, self.accum = distributed.batch_split(
            t.batch_size, t.grad_accum, t.micro_batch_size, self.world_size
        )
        self.device = distributed.setup(resolve_device(t.device))
        self.precision = resolve_precision(t.precision, self.device)
        if self.precision == "fp16" and t.parallel == "fsdp" and self.world_size > 1:
            raise TinyLMError("train.precision=fp16 does not work with train.parallel=fsdp "
                              "(per-shard loss scaling); use bf16")  # fmt: skip

        self.dataset = PreparedDataset.open(config.data.path)
        self.tokenizer: Tokenizer = self.dataset.tokenizer  # fingerprint-checked
        # Continue from given weights (e.g. `tinylm import`): their shape is the model's.
        self.init = load_checkpoint(t.init_from) if t.init_from else None
        if self.init is not None:
            tok = self.init.meta["tokenizer"]
            self.dataset.check_tokenizer(tok["fingerprint"], tok["name"], t.init_from)
        resolve_model(config)  # a no-op when a rerun's comparison resolved it already
        if config.model.vocab_size != self.tokenizer.vocab_size:
            raise TinyLMError(
                f"model.vocab_size={config.model.vocab_size} but {self.dataset.path} uses "
                f"{self.tokenizer.name} with {self.tokenizer.vocab_size} tokens; "
                f"set model.vocab_size={self.tokenizer.vocab_size} (or 0 to follow the data)"
            )
        self.loader = BlockLoader(
            self.dataset.tokens(config.data.train_split),
            config.model.block_size,
            self.micro_batch,
            t.seed,
            rank=distributed.rank(),
            world_size=self.world_size,
            sampling=config.data.sampling,
        )
        if self.loader.blocks_per_rank == 0:
            raise TinyLMError(
                f"{self.dataset.path}: the {config.data.train_split} split has fewer tokens than "
                f"one block of {config.model.block_size} per process; use more data or a "
                "smaller model.block_size"
            )
        self.val_tokens = (
            self.dataset.tokens(config.data.val_split) if config.data.val_split else None
        )
        if self.val_tokens is not None and len(self.val_tokens) < 2:
            _print(f"note: the {config.data.val_split} split is empty; training without validation")
            self.val_tokens = None

        _check_fits(config, self.device, self.world_size)  # before allocating the model
        self.model, self.optimizer = self._build_model_and_optimizer()
        self.scaler = grad_scaler(self.precision, self.device)  # fp16 only; a no-op otherwise
        # self.model is the GPT that is saved; self.wrapped the module a step calls (DDP's
        # wrapper; under FSDP2 and in one process self.model itself).
        self.forward_model = maybe_compile(self.wrapped, t.compile)
        self.planned_steps = _planned_steps(config, self.loader.batches_per_epoch, self.accum)
        # A decaying schedule without an explicit length spans the budget (inf: time only).
        budget_steps = self.planned_steps if self.planned_steps < sys.maxsize else math.inf
        budget_tokens = budget_steps * t.batch_size * t.grad_accum * config.model.block_size
        if t.max_tokens:
            budget_tokens = min(budget_tokens, t.max_tokens)
        self.schedule = build_schedule(config.optim, budget_steps, budget_tokens, t.max_minutes)
        self.store = CheckpointStore(run.checkpoints, t.keep_checkpoints)

        # Everything below is saved in a checkpoint and restored by _resume.
        self.step = self.tokens_seen = 0
        self.loss = math.nan
        self.recent_losses: deque[float] = deque(maxlen=RECENT_STEPS)
        self.val: EvalResult | None = None
        self.val_step = -1
        self.next_eval_tokens = t.eval_interval_tokens
        self.best_val = math.inf
        self.evals_without_improvement = 0
        self.skipped_steps = 0
        self.train_seconds_before = self.elapsed_before = 0.0  # of earlier sessions

        self.resumed_from: int | None = None
        self.resumed_records: int | None = None  # metrics records the checkpoint accounts for
        if resume_from is not None:
            self._resume(resume_from)
        distributed.seed_rank_rng(t.seed, self.step)  # ranks > 0: their own dropout

        self.saved_step = self.resumed_from if self.resumed_from is not None else -1
        self.session_tokens = 0
        self.start = 0.0
        self.eval_seconds = 0.0  # excluded from tokens/s, which measures training alone
        self.stop_signal = 0
        self.stop_reason: str | None = None  # set when the loop ends; saved in the last meta
        # The hot loop's own state (see _step and _read_steps).
        self.pending: list[_PendingStep] = []
        self.pending_log_step: int | None = None  # the first pending step due a record
        self.read_lag = 1 if self.device.type == "cuda" else 0
        self.skip_on_device = (
            _skips_on_device(self.optimizer)
            and not self.scaler.is_enabled()
            and not distributed.is_sharded(self.model)  # DTensor parameters: not tried
        )
        self.numbers_read = False

    # --- the two pieces a performance change replaces -----------------------------------

    def _build_model_and_optimizer(self) -> tuple[GPT, torch.optim.Optimizer]:
        model = GPT(self.config.model).to(self.device)
        if self.init is not None:  # train.init_from; a resume then loads its own weights
            model.load_state_dict(self.init.model.state_dict())
        # Under torchrun: DDP or FSDP2 (which shards `model` in place, so before AdamW).
        self.wrapped = distributed.wrap(model, self.config.train.parallel, self.device)
        return model, build_optimizer(model, self.config.optim)

    def _micro_batch_loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss of one (B, T) micro-batch: a scalar with a graph. The output
        layer and loss run in chunks, so the (B, T, vocab) logits never exist at once."""
        with autocast(self.precision, self.device):
            return chunked_next_token_loss(self.forward_model, batch)

    # --- the loop ---------------------------------------------------------------------

    def fit(self) -> TrainResult:
        t, run, planned_steps = self.config.train, self.run, self.planned_steps
        main = distributed.is_main()
        self.metrics: MetricsLog | None = None
        if main:
            write_atomic(run.config, _config_yaml(self.config))
            self.store.clean_partial()
            self.metrics = MetricsLog(
                run.metrics,
                run.tensorboard if t.tensorboard else None,
                self.resumed_from,
                self.resumed_records,
            )
        what = f"resumed at step {self.step:,}" if self.resumed_from is not None else "run"
        world = self.world_size
        under_torchrun = distributed.env().distributed
        plural = "es" if world > 1 else ""
        processes = f"{world} process{plural} ({t.parallel}) x " if under_torchrun else ""
        _print(
            f"model: {self.model.num_parameters():,} parameters | data: "
            f"{self.loader.num_blocks:,} blocks of {self.config.model.block_size} tokens, "
            f"{self.loader.batches_per_epoch:,} batches/epoch | batch: "
            f"{t.batch_size * t.grad_accum} sequences = {processes}{self.micro_batch} x "
            f"{self.accum} accumulated | device: {self.device} ({self.precision}) | "
            f"{what}: {run.path}"
        )
        stop_reason = "budget"
        self.start = time.monotonic()
        budget_s = t.max_minutes * 60 - self.elapsed_before if t.max_minutes else math.inf
        deadline = self.start + budget_s
        bar_total = planned_steps if planned_steps < sys.maxsize else None
        self.model.train()
        self.batches = Prefetcher(self.loader, self.device)
        previous_handlers = _install_signal_handlers(self._on_signal)
        try:
            with progress(bar_total, "train", "step", initial=self.step, disable=not main) as bar:
                while self._budget_left(deadline):
                    self._step()
                    improved = self._validate_if_due()
                    interval = t.checkpoint_interval
                    if improved or (interval and self.step % interval == 0):
                        self._save(best=improved)
                    patience = t.early_stop_patience
                    if patience and self.evals_without_improvement >= patience:
                        stop_reason = "early_stop"
                        _print(
                            f"early stop at step {self.step}: {patience} validations without "
                            f"beating the best val loss {self.best_val:.4f} "
                            f"(by more than {t.early_stop_min_delta:g})"
                        )
                        break
                    if self._signalled():
                        stop_reason = "signal"
                        name = signal.Signals(self.stop_signal).name
                        _print(f"{name} at step {self.step}: saving a checkpoint")
                        break
                    self._update_bar(bar, deadline)
                self._read_steps()
                self._update_bar(bar, deadline, advance=False)
                bar.total = self.step  # the budget that ended the run may not be the planned one
                bar.refresh()
            self.stop_reason = stop_reason
            if self.step:
                # The final validation (unless this step had one); a signal saves at once,
                # as a preempted job may have only seconds left.
                improved = stop_reason != "signal" and self._validate()
                kill_point("end:validated")
                self._save(best=improved)
                kill_point("end:saved")
        finally:
            self.batches.close()
            _restore_signal_handlers(previous_handlers)
            if self.metrics is not None:
                self.metrics.close()
        if main:
            plot_losses([run], run.loss_plot)  # redrawn by a rerun if a kill prevents it
            kill_point("end:plotted")
        return TrainResult(
            run,
            self.step,
            self.tokens_seen,
            self._train_seconds(),
            self._recent_loss(),
            self.val,
            interrupted=stop_reason == "signal",
            signal=self.stop_signal,
            stop_reason=stop_reason,
            resumed_from=self.resumed_from,
        )

    def _budget_left(self, deadline: float) -> bool:
        t = self.config.train
        return (
            self.step < self.planned_steps
            and (not t.max_tokens or self.tokens_seen < t.max_tokens)
            and self._before(deadline)
        )

    def _before(self, deadline: float) -> bool:
        """Whether the time budget has time left, as all ranks agree (clocks differ)."""
        ahead = time.monotonic() < deadline
        if self.world_size == 1 or not math.isfinite(deadline):
            return ahead
        return not distributed.all_reduce([float(not ahead)], op="max", device=self.device)[0]

    def _signalled(self) -> int:
        """The stop signal any rank received (all ranks stop at the same step)."""
        if self.world_size == 1:
            return self.stop_signal
        values = [float(self.stop_signal)]
        agreed = int(distributed.all_reduce(values, op="max", device=self.device)[0])
        # A signal that lands during the all-reduce stays set here for the next step's.
        self.stop_signal = agreed or self.stop_signal
        return agreed

    def _step(self) -> None:
        """One optimizer step over grad_accum micro-batches. Its loss, gradient norm and
        finiteness stay on the device: _read_steps reads them at log steps."""
        accum = self.accum
        self.optimizer.zero_grad(set_to_none=True)
        losses, tokens = [], 0
        for i in range(accum):
            batch = self.batches.next_batch()  # (B, T) on the device, B = this rank's share
            try:
                # Ranks exchange gradients once per step, on its last micro-batch.
                with distributed.gradient_sync(self.wrapped, i == accum - 1):
                    loss = self._micro_batch_loss(batch)
                    self.scaler.scale(loss / accum if accum > 1 else loss).backward()
            except RuntimeError as err:  # torch.OutOfMemoryError is one
                if is_out_of_memory(err):
                    raise TinyLMError(
                        f"out of memory at batch size {batch.shape[0]} x {batch.shape[1]} "
                        "tokens; lower train.batch_size (raise train.grad_accum to keep the "
                        "global batch) or model.n_embd / model.block_size"
                    ) from None
                raise
            losses.append(loss.detach())
            tokens += batch.numel() * self.world_size  # every rank's share is the same size
        # The mean over the global batch (ranks' shares are equal, so the mean of means).
        step_loss = distributed.mean_over_ranks(
            losses[0] if accum == 1 else torch.stack(losses).mean()
        )
        clip = self.config.optim.grad_clip
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
        grad_norm = distributed.clip_grad_norm(
            list(self.model.parameters()), clip if clip > 0 else math.inf
        )  # the norm of the whole model's gradient before clipping
        self.step += 1
        self.tokens_seen += tokens
        self.session_tokens += tokens
        lr = self.schedule.lr_for(self.step, self.tokens_seen, self._schedule_seconds())
        for group in self.optimizer.param_groups:  # Muon's peak is its own: lr_scale
            group["lr"] = lr * group.get("lr_scale", 1.0)
        finite = torch.isfinite(step_loss) & torch.isfinite(grad_norm)
        values = torch.stack([step_loss.double(), grad_norm.double(), finite.double()])  # (3,)
        overflow = False
        if self.skip_on_device:
            # A non-finite step is skipped inside the fused AdamW kernel (weights, moments
            # and its step count untouched), so no host decision waits for the device.
            self.optimizer.found_inf = 1.0 - values[2].float()  # type: ignore[attr-defined]
            self.optimizer.step()
            del self.optimizer.found_inf  # type: ignore[attr-defined]
            # On a CPU the flag is computed already (no queue to wait on): a bad step is
            # read at once, so train.max_skipped_steps stops exactly at its limit. A GPU
            # reads it with the log step's numbers (the stop may come up to log_interval late).
            read_now = self.device.type == "cpu" and not values[2].item()
        else:  # an optimizer without that switch, or fp16's GradScaler: decide on the host
            step_loss_f, _, ok = values.tolist()
            # fp16 only: gradients that overflow the loss scale are GradScaler's routine
            # signal to lower the scale, not a sign the run is failing; the update is skipped
            # uncounted while the scale is still >= 1 (16 halvings from its start). Below
            # that the gradients are non-finite on their own, and such steps count as skipped.
            overflow = (
                self.scaler.is_enabled()
                and math.isfinite(step_loss_f)
                and not ok
                and self.scaler.get_scale() >= 1.0
            )
            if ok:
                self.scaler.step(self.optimizer)
            read_now = not ok
        self.scaler.update()
        loader = self.loader
        log = self.step % self.config.train.log_interval == 0 or self.step == self.planned_steps
        self.pending.append(
            _PendingStep(
                values,
                overflow,
                log,
                {
                    "step": self.step,
                    "tokens": self.tokens_seen,
                    "elapsed_s": self._elapsed(),
                    "epoch": loader.epoch + loader.batch_in_epoch / loader.batches_per_epoch,
                    "lr": lr,
                    "tokens_per_s": self._rate(),
                },
            )
        )
        # Read what is due: on a CPU at once; on a GPU one step late, with the next step
        # already queued behind it, so the device does not idle while the host reads.
        if log and self.pending_log_step is None:
            self.pending_log_step = self.step
        due = self.step - self.read_lag
        if read_now or (self.pending_log_step is not None and self.pending_log_step <= due):
            self._read_steps(self.step if read_now else due)

    def _read_steps(self, through: int | None = None) -> None:
        """Read the pending steps' numbers (up to step `through`, default all) in one
        transfer: count non-finite steps, write their records and those of log steps, and
        stop the run after train.max_skipped_steps."""
        through = self.step if through is None else through
        ready = [p for p in self.pending if p.fields["step"] <= through]
        if not ready:
            return
        del self.pending[: len(ready)]
        self.pending_log_step = next((p.fields["step"] for p in self.pending if p.log), None)
        numbers = torch.stack([p.values for p in ready]).tolist()  # the one host sync
        newly_skipped = False
        for p, (step_loss, grad_norm, ok) in zip(ready, numbers, strict=True):
            if ok:
                self.loss = step_loss
                self.recent_losses.append(step_loss)
            elif not p.overflow:
                self.skipped_steps += 1
                newly_skipped = True
                _print(f"step {p.fields['step']}: non-finite loss or gradient norm; update "
                       f"skipped ({self.skipped_steps} so far)")  # fmt: skip
            if p.log or not ok:
                f = p.fields
                self._record(
                    kind="train",
                    at=(f["step"], f["tokens"], f["elapsed_s"]),
                    epoch=f["epoch"],
                    loss=step_loss,
                    lr=f["lr"],
                    grad_norm=grad_norm,
                    tokens_per_s=f["tokens_per_s"],
                    skipped_steps=self.skipped_steps,
                )
        self.numbers_read = True
        limit = self.config.train.max_skipped_steps
        if newly_skipped and self.skipped_steps >= limit > 0:
            self._save(best=False)  # the weights are those before the bad steps
            raise TinyLMError(
                f"stopped at step {self.step}: {self.skipped_steps} steps had a non-finite loss "
                f"or gradient (train.max_skipped_steps={limit}); "
                f"{self.run.latest_checkpoint} holds the last good weights; lower optim.lr or "
                "raise optim.warmup, then resume with --resume"
            )

    def _validate_if_due(self) -> bool:
        t = self.config.train
        due = bool(t.eval_interval) and self.step % t.eval_interval == 0
        if t.eval_interval_tokens and self.tokens_seen >= self.next_eval_tokens:
            due = True
            while self.next_eval_tokens <= self.tokens_seen:
                self.next_eval_tokens += t.eval_interval_tokens
        return self._validate() if due else False

    def _validate(self) -> bool:
        """Validation loss on the fixed val batches, once per step at most.

        Returns whether it beat the best so far by more than early_stop_min_delta.
        """
        if self.val_tokens is None or self.val_step == self.step:
            return False
        self._read_steps()  # the step's train record comes before its val record
        eval_start = time.monotonic()
        t, block_size = self.config.train, self.config.model.block_size
        # The first eval_batches batches of batch_size blocks, every time; evaluated in
        # batches as large as evaluate finds fastest, in the training precision.
        self.val = evaluate(
            self.model,
            eval_prefix(self.val_tokens, block_size, t.batch_size, t.eval_batches),
            block_size,
            device=self.device,
            token_bytes=self.tokenizer.token_bytes,
            precision=self.precision,
            progress=False,
        )
        self.val_step = self.step
        self.eval_seconds += time.monotonic() - eval_start
        improved = self.val.loss < self.best_val - self.config.train.early_stop_min_delta
        if improved:
            self.best_val, self.evals_without_improvement = self.val.loss, 0
        else:
            self.evals_without_improvement += 1
        self._record(
            kind="val",
            val_loss=self.val.loss,
            val_ppl=self.val.perplexity,
            val_bpb=self.val.bits_per_byte,
            best_val_loss=self.best_val,
        )
        return improved

    # --- checkpoints ------------------------------------------------------------------

    def _save(self, best: bool) -> None:
        """A checkpoint of this step as `latest` (and `best`); once per step. Under torchrun
        every rank calls it (FSDP2 gathers the shards) and rank 0 writes."""
        self._read_steps()  # the counters and recent losses the meta holds
        meta = self._meta()
        new = self.saved_step != self.step
        if new:
            model, moments = self._full_state()
            self.saved_step = self.step
        if not distributed.is_main():
            return
        # The order makes `latest` (or, for the same step, its meta) the commit point: a
        # kill before it resumes from the previous checkpoint, one after it finds the
        # checkpoint whole, `best` included (see docs/run-directory.md, "Kills").
        if new:
            rng_json, rng_tensors = capture_rng()  # rank 0's generators (see _resume)
            meta["rng"] = rng_json
            state = {**moments, **rng_tensors}
            path = self.store.write(self.step, model, self.config, meta, state)
            kill_point("checkpoint:written")
        else:  # same tensors: only the metadata moves on
            path = self.store.target(LATEST)
            assert path is not None
        if best:
            self.store.point(BEST, path)
            kill_point("checkpoint:best")
        if new:
            self.store.point(LATEST, path)
        else:
            self.store.rewrite_meta(path, self.config, meta)
        kill_point("checkpoint:committed")
        self.store.prune()

    def _full_state(self) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        """The model to write and its AdamW moments by name. FSDP2: the shards gathered into
        a CPU copy of the model on rank 0 (others get an empty dict); collective."""
        if not distributed.is_sharded(self.model):  # one process or DDP: rank 0's replica
            main = distributed.is_main()
            return self.model, optimizer_tensors(self.model, self.optimizer) if main else {}
        weights = distributed.full_model_state(self.model)
        moments = distributed.full_optimizer_state(self.model, self.optimizer)
        if not distributed.is_main():
            return self.model, {}
        model = _cpu_model(self.config)
        model.load_state_dict(weights)
        state = {f"optim.{name}.{field}": value for name, fields in moments.items()
                 for field, value in fields.items() if torch.is_tensor(value)}  # fmt: skip
        return model, state

    def _meta(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "train_seconds": self._train_seconds(),
            "elapsed_s": self._elapsed(),
            "loader": self.loader.state_dict(),
            "train_loss": self._recent_loss(),
            "train_loss_steps": len(self.recent_losses),
            "last_step_loss": self.loss,
            "val": self.val.to_dict() if self.val else None,
            "dataset": str(self.dataset.path),
            "tokenizer": {"name": self.tokenizer.name, "fingerprint": self.tokenizer.fingerprint},
            "num_parameters": self.model.num_parameters(),
            # metrics.jsonl records this checkpoint accounts for: a resume drops later ones
            "metrics_records": self.metrics.records if self.metrics is not None else None,
            "interrupted": bool(self.stop_signal),
            "stop_reason": self.stop_reason,
            "trainer": {
                "recent_losses": list(self.recent_losses),
                "val_step": self.val_step,
                "next_eval_tokens": self.next_eval_tokens,
                "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
                "evals_without_improvement": self.evals_without_improvement,
                "skipped_steps": self.skipped_steps,
                # fp16's loss scale and growth counter ({} when GradScaler is off)
                "grad_scaler": self.scaler.state_dict(),
            },
        }

    def _resume(self, path: Path) -> None:
        """Restore every piece of state a checkpoint holds (checked before any write)."""
        meta = read_meta(path)
        check_compatible(path, meta, self.config, self.tokenizer)
        if "trainer" not in meta or "rng" not in meta:
            raise TinyLMError(f"{path}: checkpoint lacks the trainer state needed to resume")
        for key in ("batch_size", "seed"):  # the data position is counted in seeded batches
            saved, wanted = meta["config"]["train"][key], getattr(self.config.train, key)
            if saved != wanted:
                raise TinyLMError(
                    f"{path}: checkpoint was trained with train.{key}={saved} (config: "
                    f"{wanted}); its data position only holds for the same value"
                )
        saved = meta["config"]["optim"].get("optimizer", "adamw")
        if saved != self.config.optim.optimizer:  # its state holds the other's moments
            raise TinyLMError(
                f"{path}: checkpoint was trained with optim.optimizer={saved} (config: "
                f"{self.config.optim.optimizer}); resume with the same optimizer"
            )
        state = read_state(path)
        if distributed.is_sharded(self.model):
            # Every rank reads the full checkpoint into a CPU copy and keeps its shard.
            model = _cpu_model(self.config)
            load_weights(path, model)
            plain_optimizer = build_optimizer(model, self.config.optim)
            load_optimizer_tensors(path, model, plain_optimizer, state)  # checks the names
            moments: dict[str, dict[str, torch.Tensor]] = {}
            for key, value in state.items():
                if key.startswith("optim."):
                    name, field = key[len("optim.") :].rsplit(".", 1)
                    moments.setdefault(name, {})[field] = value
            distributed.load_full_state(self.model, self.optimizer, model.state_dict(), moments)
        else:
            load_weights(path, self.model)
            load_optimizer_tensors(path, self.model, self.optimizer, state)
        restore_rng(meta["rng"], state)  # rank 0's; other ranks then derive their own
        self.loader.load_state_dict(meta["loader"])
        tr = meta["trainer"]
        self.step, self.tokens_seen = meta["step"], meta["tokens_seen"]
        self.loss = meta["last_step_loss"] if meta["last_step_loss"] is not None else math.nan
        self.recent_losses.extend(tr["recent_losses"])
        self.val = EvalResult(**meta["val"]) if meta.get("val") else None
        self.val_step = tr["val_step"]
        self.next_eval_tokens = tr["next_eval_tokens"]
        self.best_val = tr["best_val_loss"] if tr["best_val_loss"] is not None else math.inf
        self.evals_without_improvement = tr["evals_without_improvement"]
        self.skipped_steps = tr["skipped_steps"]
        if tr.get("grad_scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(tr["grad_scaler"])
        self.train_seconds_before = meta["train_seconds"]
        self.elapsed_before = meta["elapsed_s"]
        self.resumed_from = self.step
        self.resumed_records = meta.get("metrics_records")

    # --- signals, progress, records ---------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_signal:
            # A second signal stops at once, without a checkpoint; but under torchrun or
            # `tinylm sweep` a run gets the job's signal and its supervisor's relay of it (or
            # SLURM's SIGTERM twice), so there only the save counts (torchrun SIGKILLs 30 s
            # after relaying).
            if self.world_size == 1 and not os.environ.get(SUPERVISED_ENV):
                raise KeyboardInterrupt
            return
        self.stop_signal = signum

    def _update_bar(self, bar: Any, deadline: float, advance: bool = True) -> None:
        """One step further; the numbers after it change only when _read_steps read some."""
        if advance:
            bar.update(1)
        if not self.numbers_read:
            return
        self.numbers_read = False
        elapsed = time.monotonic() - self.start
        done = max(self.step - (self.resumed_from or 0), 1)
        eta = min((self.planned_steps - self.step) * elapsed / done, deadline - time.monotonic())
        if math.isfinite(deadline) and elapsed > 0:  # a time budget: re-estimate the length
            bar.total = min(self.planned_steps, self.step + int(eta * done / elapsed))
        bar.set_postfix_str(
            f"loss {self._recent_loss():.3f}"
            + (f" | val {self.val.loss:.3f}" if self.val else "")
            + f" | {self._rate():,.0f} tok/s | ETA {_duration(eta)}",
            refresh=False,
        )

    def _recent_loss(self) -> float:
        return sum(self.recent_losses) / len(self.recent_losses) if self.recent_losses else math.nan

    def _train_seconds(self) -> float:
        session = time.monotonic() - self.start - self.eval_seconds if self.start else 0.0
        return self.train_seconds_before + session

    def _schedule_seconds(self) -> float:
        """For a time-unit schedule: the time budget used, as the max_minutes stop measures
        it (wall time of every session, validation included), so the schedule ends where the
        run does and a resumed run continues it where it stopped. Ranks agree on one value
        (their clocks differ; different LRs would let DDP's replicas drift apart)."""
        if self.schedule.unit != "time":
            return 0.0
        if self.world_size == 1:
            return self._elapsed()
        return distributed.all_reduce([self._elapsed()], op="max", device=self.device)[0]

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.start if self.start else 0.0)

    def _rate(self) -> float:
        seconds = time.monotonic() - self.start - self.eval_seconds
        return self.session_tokens / seconds if seconds > 0 else 0.0

    def _record(self, at: tuple[int, int, float] | None = None, **fields: Any) -> None:
        """One metrics record of this step, or of the (step, tokens, elapsed_s) `at`."""
        if self.metrics is None:  # not rank 0
            return
        step, tokens, elapsed = at if at is not None else (self.step, self.tokens_seen, None)
        self.metrics.write(
            {
                "kind": fields.pop("kind"),
                "step": step,
                "tokens": tokens,
                "elapsed_s": elapsed if elapsed is not None else self._elapsed(),
                **fields,
            }
        )


@dataclass
class _PendingStep:
    """A step whose numbers are still on the device."""

    values: torch.Tensor
    """(3,) float64: mean loss, gradient norm before clipping, 1.0 if both are finite."""
    overflow: bool
    """fp16 only: a loss-scale overflow (skipped, not counted)."""
    log: bool
    """A metrics record is due for it (every train.log_interval steps and the last)."""
    fields: dict[str, Any]
    """Its host-side numbers: step, tokens, elapsed_s, epoch, lr, tokens_per_s."""


def _skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer.step()` honours a `found_inf` tensor (GradScaler's switch): torch's
    fused Adam and AdamW skip the whole update on the device when it is 1."""
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and bool(
        optimizer.defaults.get("fused")
    )


def _planned_steps(config: Config, batches_per_epoch: int, accum: int) -> int:
    """Optimizer steps the step/epoch budgets allow (sys.maxsize: no such budget).
    batches_per_epoch: one rank's micro-batches; accum: its micro-batches per step."""
    t = config.train
    limits = []
    if t.epochs > 0:
        limits.append(math.ceil(t.epochs * batches_per_epoch / accum))
    if t.max_steps > 0:
        limits.append(t.max_steps)
    if t.max_tokens > 0:
        tokens_per_step = t.batch_size * t.grad_accum * config.model.block_size
        limits.append(math.ceil(t.max_tokens / tokens_per_step))
    return min(limits) if limits else sys.maxsize  # time budget only


def _training_bytes_per_parameter(optimizer: str) -> int:
    """fp32 weights and gradients, and the optimizer's moments (AdamW two, Muon one): the
    floor of training memory per parameter, before any activation."""
    return 4 + 4 + (4 if optimizer == "muon" else 8)


def _check_fits(config: Config, device: torch.device, world_size: int) -> None:
    """Refuse a model whose weights, gradients and AdamW state alone exceed the memory
    this device has free (a typo of n_embd or n_layer), before anything is allocated:
    the parameters are counted on the meta device. FSDP shards them over the processes."""
    with torch.device("meta"):
        parameters = GPT(config.model).num_parameters()
    shards = world_size if config.train.parallel == "fsdp" else 1
    needed = parameters * _training_bytes_per_parameter(config.optim.optimizer) / shards
    free = _free_memory(device)
    if free is not None and needed > free:
        raise TinyLMError(
            f"the model has {parameters:,} parameters: its weights, gradients and optimizer "
            f"state need {needed / 2**30:,.1f} GiB per process, more than the "
            f"{free / 2**30:,.1f} GiB free on {device}; lower model.n_embd, model.n_layer "
            "or model.vocab_size"
        )


def _free_memory(device: torch.device) -> int | None:
    """Bytes free on the device (CPU: MemAvailable), None where it cannot be told."""
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0]
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, RuntimeError, ValueError):
        pass
    return None


def _cpu_model(config: Config) -> GPT:
    """A plain GPT to gather FSDP2 shards into or read a checkpoint through; its random
    init must not advance the training RNG."""
    with torch.random.fork_rng(devices=[]):
        return GPT(config.model)


def _config_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def _install_signal_handlers(handler: Any) -> dict[int, Any]:
    """SIGINT and SIGTERM set a flag the loop checks after each step (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _print(message: str) -> None:
    distributed.print0(message)  # rank 0 speaks for the run


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
