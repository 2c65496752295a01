"""AdamW with weight decay on weight matrices only."""

from __future__ import annotations

import torch

from tinylm.config import OptimConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """Decay Linear and token-embedding matrices; never biases, LayerNorms or positions.

    Decaying the position table pulls positions toward each other for no benefit, and
    decaying gains/biases fights the normalisation they exist to undo.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_matrix = param.dim() >= 2 and not name.startswith("wpe.")
        (decay if is_matrix else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel updates every tensor in one pass instead of a loop of small ops
    # (several times faster for 13M parameters on 2 cores). It needs float parameters on
    # CPU or CUDA.
    fused = all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in decay + no_decay
    )
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused
    )
