"""Checkpoints: tensors in safetensors, everything else in JSON.

    CKPT/model.safetensors   model weights (shared tensors stored once)
    CKPT/meta.json           step, tokens seen, data position, resolved config,
                             tokenizer name and fingerprint, library versions

A checkpoint is written to a temporary directory beside its final place, fsynced, then
renamed over the old one, so a crash mid-write never leaves a damaged checkpoint under
the final name. No pickle is involved anywhere, so loading cannot run code.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from tinylm import __version__
from tinylm.atomic import replace_dir, temp_dir_beside
from tinylm.config import Config, config_from_dict
from tinylm.errors import TinyLMError
from tinylm.model import GPT

WEIGHTS = "model.safetensors"
META = "meta.json"


@dataclass
class Checkpoint:
    path: Path
    """The checkpoint directory (RUN/checkpoints/latest when a run dir was given)."""
    model: GPT
    config: Config
    meta: dict[str, Any]


def save_checkpoint(
    path: Path, model: torch.nn.Module, config: Config, meta: dict[str, Any]
) -> None:
    tmp = temp_dir_beside(Path(path))
    safetensors.torch.save_model(model, str(tmp / WEIGHTS))
    full_meta = {
        **meta,
        "config": config.to_dict(),
        "versions": {
            "tinylm": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    (tmp / META).write_text(json.dumps(full_meta, indent=2) + "\n")
    replace_dir(tmp, Path(path))


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint directory, or the latest checkpoint of a run directory."""
    path = resolve_checkpoint(Path(path))
    try:
        meta = json.loads((path / META).read_text())
        config = config_from_dict(meta["config"])
    except (json.JSONDecodeError, KeyError) as err:
        raise TinyLMError(f"{path / META}: damaged checkpoint metadata ({err})") from None
    model = GPT(config.model)
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(path / WEIGHTS), strict=False)
    except (safetensors.SafetensorError, OSError) as err:
        raise TinyLMError(f"{path / WEIGHTS}: damaged or unreadable weights ({err})") from None
    if missing or unexpected:
        raise TinyLMError(
            f"{path}: weights do not fit the architecture in its meta.json "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    return Checkpoint(path, model.to(device), config, meta)


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint dir as given, or RUN/checkpoints/latest for a run dir."""
    for candidate in (path, path / "checkpoints" / "latest"):
        if (candidate / WEIGHTS).is_file() and (candidate / META).is_file():
            return candidate
    if not path.exists():
        raise TinyLMError(f"{path}: no such run or checkpoint directory")
    raise TinyLMError(
        f"{path}: no checkpoint here (expected {WEIGHTS} and {META}, or checkpoints/latest/); "
        "train a model with `tinylm train` first"
    )
