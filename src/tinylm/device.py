"""Device choice, defined once: 'auto' means CUDA when present, else CPU."""

from __future__ import annotations

import torch

from tinylm.errors import TinyLMError

SUPPORTED = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TinyLMError(f"unknown device {name!r}; use {SUPPORTED}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise TinyLMError(f"device {name!r} is not supported; use {SUPPORTED}")
    if not torch.cuda.is_available():
        raise TinyLMError(f"device {name!r} requested but CUDA is not available; use cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise TinyLMError(
            f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
        )
    return device
