"""Checkpoints: tensors in safetensors, everything else in JSON, never a pickle.

    RUN/checkpoints/step-00000500/      one checkpoint per saved step
        model.safetensors               model weights (shared tensors stored once)
        state.safetensors               AdamW moments by parameter name, torch RNG states
        meta.json                       step, tokens, loader position, python/numpy RNG
                                        states, trainer counters, resolved config,
                                        tokenizer name and fingerprint, library versions
    RUN/checkpoints/latest -> step-00000500    symlinks, swapped atomically
    RUN/checkpoints/best   -> step-00000400

A checkpoint is written to a hidden temporary directory, fsynced, renamed to its step
name, and only then is `latest` re-pointed (a new symlink renamed over the old one), so
a crash at any moment leaves `latest` on a complete checkpoint. The last
`keep_checkpoints` step directories are kept, plus the one `best` points to.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from tinylm import __version__
from tinylm.atomic import (
    fsync_dir,
    remove_temporaries,
    replace_dir,
    temp_dir_beside,
    write_atomic,
)
from tinylm.config import Config, config_from_dict
from tinylm.errors import TinyLMError, disk_full
from tinylm.faults import kill_point
from tinylm.model import GPT

WEIGHTS = "model.safetensors"
STATE = "state.safetensors"
META = "meta.json"
FORMAT = "tinylm-checkpoint/2"
LATEST, BEST = "latest", "best"


@dataclass
class Checkpoint:
    path: Path
    """The checkpoint directory (RUN/checkpoints/latest when a run dir was given)."""
    model: GPT
    config: Config
    meta: dict[str, Any]


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    config: Config,
    meta: dict[str, Any],
    state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write one checkpoint directory whole or not at all (`state`: optimizer and RNG
    tensors, for resuming)."""
    tmp = temp_dir_beside(Path(path))
    try:
        _write_checkpoint(tmp, model, config, meta, state)
        replace_dir(tmp, Path(path))
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)  # no .step-N.tmp-PID left (a full disk)
        if disk_full(err):
            raise TinyLMError(
                f"{path}: disk full while writing the checkpoint; free some space, then run "
                "the same command again (it resumes from the last complete checkpoint)"
            ) from None
        raise


def _write_checkpoint(
    tmp: Path,
    model: torch.nn.Module,
    config: Config,
    meta: dict[str, Any],
    state: dict[str, torch.Tensor] | None,
) -> None:
    safetensors.torch.save_model(model, str(tmp / WEIGHTS))
    kill_point("checkpoint:weights")
    if state:
        safetensors.torch.save_file(state, str(tmp / STATE))
    full_meta = {
        "format": FORMAT,
        **meta,
        "config": config.to_dict(),
        "versions": {
            "tinylm": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    (tmp / META).write_text(json.dumps(json_safe(full_meta), indent=2) + "\n")


def json_safe(value: Any) -> Any:
    """NaN and infinities (a diverged loss) become null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint directory, or the latest checkpoint of a run directory."""
    path = resolve_checkpoint(Path(path))
    meta = read_meta(path)
    config = config_from_dict(meta["config"])
    model = GPT(config.model)
    load_weights(path, model)
    return Checkpoint(path, model.to(device), config, meta)


def read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / META).read_text())
        config_from_dict(meta["config"])
    except (ValueError, KeyError, TypeError) as err:  # JSON, UTF-8, a missing key
        raise TinyLMError(f"{path / META}: damaged checkpoint metadata ({err})") from None
    return meta


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Weights into `model` (on any device); refused unless every tensor fits exactly."""
    try:
        missing, unexpected = safetensors.torch.load_model(
            model, str(path / WEIGHTS), strict=False, device=str(_device_of(model))
        )
    except (safetensors.SafetensorError, OSError) as err:
        raise TinyLMError(f"{path / WEIGHTS}: damaged or unreadable weights ({err})") from None
    except RuntimeError as err:  # a tensor of another shape
        raise TinyLMError(
            f"{path}: weights do not fit the model's architecture ({str(err).splitlines()[-1]})"
        ) from None
    if missing or unexpected:
        raise TinyLMError(
            f"{path}: weights do not fit the architecture in its meta.json "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint dir as given, or RUN/checkpoints/latest for a run dir."""
    for candidate in (path, path / "checkpoints" / LATEST):
        if (candidate / WEIGHTS).is_file() and (candidate / META).is_file():
            return candidate
    if not path.exists():
        raise TinyLMError(f"{path}: no such run or checkpoint directory")
    raise TinyLMError(
        f"{path}: no checkpoint here (expected {WEIGHTS} and {META}, or checkpoints/latest/); "
        "train a model with `tinylm train` first"
    )


def check_compatible(path: Path, meta: dict[str, Any], config: Config, tokenizer: Any) -> None:
    """Refuse to resume a checkpoint of another architecture or tokenizer."""
    saved = meta["config"]["model"]
    wanted = config.to_dict()["model"]
    diffs = [f"model.{k}={saved.get(k)!r} (config: {v!r})" for k, v in wanted.items()
             if k != "dropout" and saved.get(k) != v]  # fmt: skip
    if diffs:
        raise TinyLMError(
            f"{path}: checkpoint is of another architecture: {', '.join(diffs[:3])}; "
            "resume with the model settings it was trained with, or start a new --out"
        )
    tok = meta.get("tokenizer") or {}
    if tok.get("fingerprint") != tokenizer.fingerprint:
        raise TinyLMError(
            f"{path}: checkpoint was trained with tokenizer {tok.get('name')!r} "
            f"(fingerprint {str(tok.get('fingerprint'))[:12]}), the data uses "
            f"{tokenizer.name!r} ({tokenizer.fingerprint[:12]}); resume on data tokenized "
            "the same way, or start a new --out"
        )


# --- optimizer state by parameter name ---------------------------------------------------


def optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """AdamW's per-parameter state as {"optim.<param name>.<field>": tensor}.

    Keyed by name rather than position, so a change in how parameters are grouped cannot
    silently pair a moment with the wrong weight.
    """
    names = _param_names(model, optimizer)
    return {
        f"optim.{names[i]}.{field}": value.detach().contiguous()
        for i, fields in optimizer.state_dict()["state"].items()
        for field, value in fields.items()
        if torch.is_tensor(value)
    }


def load_optimizer_tensors(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, tensors: dict
) -> None:
    """Put saved moments back; the hyperparameters stay those of the current config."""
    index = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        name, field = key[len("optim.") :].rsplit(".", 1)
        if name not in index:
            raise TinyLMError(f"{path / STATE}: optimizer state for unknown parameter {name}")
        state.setdefault(index[name], {})[field] = value
    if state and len(state) != len(index):
        raise TinyLMError(f"{path / STATE}: optimizer state covers {len(state)} of "
                          f"{len(index)} parameters; the checkpoint is damaged")  # fmt: skip
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(path / STATE))
    except (safetensors.SafetensorError, OSError) as err:
        raise TinyLMError(
            f"{path / STATE}: damaged or missing trainer state ({err}); this checkpoint "
            "can be evaluated but not resumed"
        ) from None


def _param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's own order (the indices of its state_dict)."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [by_id[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# --- the run's checkpoint directory -------------------------------------------------------


class CheckpointStore:
    """RUN/checkpoints: numbered step directories, `latest` and `best` symlinks."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root, self.keep = root, keep

    def clean_partial(self) -> None:
        """Remove temporary directories a crash mid-write left behind."""
        remove_temporaries(self.root)

    def write(self, step: int, model: torch.nn.Module, config: Config, meta: dict,
              state: dict[str, torch.Tensor]) -> Path:  # fmt: skip
        """The step's checkpoint directory, not yet `latest` (see point)."""
        path = self.root / f"step-{step:08d}"
        save_checkpoint(path, model, config, meta, state)
        return path

    def save(self, step: int, model: torch.nn.Module, config: Config, meta: dict,
             state: dict[str, torch.Tensor]) -> Path:  # fmt: skip
        path = self.write(step, model, config, meta, state)
        self.point(LATEST, path)
        return path

    def rewrite_meta(self, path: Path, config: Config, meta: dict) -> None:
        """New metadata for a checkpoint whose tensors have not changed (same step)."""
        old = json.loads((path / META).read_text())
        full = {**old, **meta, "config": config.to_dict()}
        write_atomic(path / META, json.dumps(json_safe(full), indent=2) + "\n")

    def point(self, name: str, target: Path) -> None:
        """Re-point `name` at target: a new relative symlink renamed over the old one."""
        tmp = self.root / f".{name}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target.name)
        os.replace(tmp, self.root / name)
        fsync_dir(self.root)

    def target(self, name: str) -> Path | None:
        link = self.root / name
        return self.root / os.readlink(link) if link.is_symlink() and link.exists() else None

    def prune(self) -> None:
        """Keep the newest `keep` step directories and whatever latest/best point to."""
        steps = sorted(p for p in self.root.glob("step-*") if p.is_dir())
        pinned = {self.target(LATEST), self.target(BEST)}
        for old in steps[: -self.keep]:
            if old not in pinned:
                shutil.rmtree(old, ignore_errors=True)
