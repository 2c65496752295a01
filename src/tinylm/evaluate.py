"""Held-out metrics: loss, perplexity and bits per byte.

All three come from the same token-weighted sums over every predicted token:
    loss        = total nats / predicted tokens
    perplexity  = exp(loss)
    bits/byte   = total nats / ln 2 / UTF-8 bytes of the predicted tokens
Bits per byte does not depend on the tokenizer, so it compares models across vocabularies.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from tinylm import distributed
from tinylm.data.loader import eval_batches
from tinylm.loss import chunked_next_token_loss


@dataclass
class EvalResult:
    loss: float
    perplexity: float
    bits_per_byte: float | None
    tokens: int
    """Predicted tokens the averages are over."""

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    tokens: np.ndarray,
    block_size: int,
    batch_size: int,
    device: torch.device,
    token_bytes: np.ndarray | None = None,
    max_batches: int = 0,
) -> EvalResult:
    """Token-weighted metrics of `model` on a split's tokens (all of it when max_batches=0).

    Under torchrun each rank measures every world_size-th batch and the sums are added
    over ranks, so the result is the same as one process's (up to summation order).
    """
    was_training = model.training
    model.eval()
    total_nats = 0.0
    total_tokens = 0
    total_bytes = 0
    byte_table = torch.from_numpy(token_bytes) if token_bytes is not None else None
    rank, world = distributed.rank(), distributed.world_size()
    batches = mine = 0
    for batches, batch in enumerate(eval_batches(tokens, block_size, batch_size, max_batches), 1):
        if (batches - 1) % world != rank:
            continue
        mine += 1
        batch = batch.to(device)
        nll = chunked_next_token_loss(model, batch, reduction="none")  # (B, T-1) nats
        total_nats += nll.sum(dtype=torch.float64).item()
        total_tokens += nll.numel()
        if byte_table is not None:
            total_bytes += int(byte_table[batch[:, 1:].cpu()].sum())  # bytes of the targets
    if world > 1:
        # FSDP2 gathers parameters in every forward: all ranks must run as many.
        for _ in range(math.ceil(batches / world) - mine):
            model(torch.zeros(1, 2, dtype=torch.long, device=device), return_hidden=True)
        total_nats, total_tokens, total_bytes = distributed.all_reduce(
            [total_nats, total_tokens, total_bytes], device=device
        )
        total_tokens, total_bytes = int(total_tokens), int(total_bytes)
    model.train(was_training)
    if total_tokens == 0:
        return EvalResult(math.nan, math.nan, None, 0)
    loss = total_nats / total_tokens
    bpb = total_nats / math.log(2) / total_bytes if total_bytes else None
    ppl = math.exp(loss) if loss < 700 else math.inf  # a diverged run: no OverflowError
    return EvalResult(loss, ppl, bpb, total_tokens)
