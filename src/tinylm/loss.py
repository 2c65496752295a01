"""The next-token loss: the one place where predictions and targets are aligned.

The reference study's first version forgot this shift and reached near-zero loss after
one epoch: without it the model is asked to predict the token it is looking at.
Every caller (training, evaluation, tests) uses this function; nothing else shifts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def next_token_loss(
    logits: torch.Tensor, tokens: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of position t's logits against token t+1.

    logits: (B, T, V), computed from tokens (B, T). The last position has no target and
    the first token is never predicted, so a block of T tokens gives T-1 predictions.
    reduction: "mean" (scalar), "sum" (scalar, nats) or "none" ((B, T-1) nats).
    """
    B, T, V = logits.shape
    if tokens.shape != (B, T):
        raise ValueError(f"logits {tuple(logits.shape)} do not match tokens {tuple(tokens.shape)}")
    predictions = logits[:, :-1, :]  # (B, T-1, V): position t predicts ...
    targets = tokens[:, 1:]  # (B, T-1):    ... token t+1
    loss = F.cross_entropy(
        predictions.reshape(-1, V).float(), targets.reshape(-1), reduction=reduction
    )
    return loss.view(B, T - 1) if reduction == "none" else loss
