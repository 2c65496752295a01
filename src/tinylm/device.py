"""Device choice, defined once: 'auto' means CUDA when present, else CPU."""

from __future__ import annotations

import torch

from tinylm.errors import TinyLMError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TinyLMError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TinyLMError(f"device {name!r} requested but CUDA is not available; use device=cpu")
    return device
