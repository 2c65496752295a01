"""Speed settings, defined once: numeric precision, torch.compile and CPU threads.

    precision  auto   bf16 where the hardware does bf16 matmuls natively (CUDA with bf16,
                      x86 CPUs with AVX512-BF16/AMX), else fp16 on CUDA, else fp32
               fp32   everything in float32
               bf16   autocast to bfloat16 (matmuls, attention); weights, optimizer
                      state, LayerNorm, softmax and the loss stay fp32
               fp16   autocast to float16 with a gradient scaler (CUDA only)

Master weights are always fp32: autocast casts them per op, the optimizer updates fp32.
"""

from __future__ import annotations

import contextlib

import torch

from tinylm.config import PRECISIONS
from tinylm.errors import TinyLMError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> the fastest precision this device trains well in; others are checked."""
    if name not in PRECISIONS:
        raise TinyLMError(f"unknown precision {name!r}; use {', '.join(PRECISIONS)}")
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise TinyLMError("precision fp16 needs a CUDA device; use bf16 or fp32 on a CPU")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TinyLMError("this GPU has no bf16 support; use fp16 or fp32")
    return name


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls several times faster than fp32 (else emulated)."""
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context every forward pass and loss of a training step runs in."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (its small exponent range underflows gradients); a no-op else."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """torch.compile(model) when asked. The first step pays for compiling (docs/training.md
    has the measured cost); on a CPU Inductor needs a C++ compiler, checked here so that a
    missing one is a clear error before the run starts, not a traceback at its first step."""
    if not enabled:
        return model
    device = next(model.parameters()).device
    if device.type == "cpu":
        from torch._inductor import cpp_builder

        try:
            cpp_builder.get_cpp_compiler()
        except Exception:  # its own exception types vary between torch versions
            raise TinyLMError(
                "train.compile=true on a CPU needs a C++ compiler (g++ or clang++, or $CXX); "
                "install one or set train.compile=false"
            ) from None
    return torch.compile(model)


def configure_threads(num_threads: int) -> None:
    """0 keeps torch's default: one intra-op thread per physical core, the fastest here."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)
