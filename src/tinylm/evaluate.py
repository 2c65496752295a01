"""Held-out metrics: loss, perplexity and bits per byte.

All three come from the same token-weighted sums over every predicted token:
    loss        = total nats / predicted tokens
    perplexity  = exp(loss)
    bits/byte   = total nats / ln 2 / UTF-8 bytes of the predicted tokens
Bits per byte does not depend on the tokenizer, so it compares models across vocabularies.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from tinylm import distributed
from tinylm.data.loader import eval_batches, eval_prefix, prefetched
from tinylm.loss import chunked_next_token_loss, unwrap
from tinylm.precision import autocast, resolve_precision
from tinylm.progress import progress as progress_bar


@dataclass
class EvalResult:
    loss: float
    perplexity: float
    bits_per_byte: float | None
    tokens: int
    """Predicted tokens the averages are over."""

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


EVAL_TOKENS_CPU = 16384
"""Tokens per forward pass on a CPU when the batch size is left to evaluate (0): 128 blocks
of 128, where `tinylm eval` used to take 32; the activations stay small."""
PROGRESS_TOKENS = 1 << 20
"""Splits of at least this many tokens show a progress bar (tokens, rate, ETA)."""


def evaluate(
    model: torch.nn.Module,
    tokens: np.ndarray,
    block_size: int,
    batch_size: int = 0,
    device: torch.device | None = None,
    token_bytes: np.ndarray | None = None,
    max_batches: int = 0,
    precision: str = "fp32",
    progress: bool | None = None,
    desc: str = "eval",
) -> EvalResult:
    """Token-weighted metrics of `model` on a split's tokens (all of it when max_batches=0).

    Forward passes only, in inference mode, under `precision`'s autocast ('fp32', 'bf16',
    'fp16' or 'auto', training's choice for the device; the loss itself sums in fp32 and
    fp64). batch_size 0 picks the largest batch the device's memory allows
    (`eval_batch_size`); without max_batches the result does not depend on it (up to
    summation order). max_batches: only the first max_batches batches (`eval_prefix`).
    progress: a bar with tokens, rate and ETA (None: for splits of PROGRESS_TOKENS or more).
    The numbers stay on the device until the end: one host sync per call.

    Under torchrun each rank measures every world_size-th batch and the sums are added
    over ranks, so the result is the same as one process's (up to summation order).
    """
    device = device if device is not None else next(model.parameters()).device
    precision = resolve_precision(precision, device)
    if batch_size <= 0:
        batch_size = eval_batch_size(model, block_size, device)
    tokens = eval_prefix(tokens, block_size, batch_size, max_batches)
    was_training = model.training
    model.eval()
    rank, world = distributed.rank(), distributed.world_size()
    nats = torch.zeros((), dtype=torch.float64, device=device)
    nbytes = torch.zeros((), dtype=torch.int64, device=device)
    byte_table = torch.from_numpy(token_bytes).to(device) if token_bytes is not None else None
    total_tokens = mine = 0
    length = len(tokens)
    show = length >= PROGRESS_TOKENS if progress is None else progress
    # FSDP2 gathers parameters through autograd-aware hooks: plain no_grad there.
    grad_off = torch.no_grad() if distributed.is_sharded(model) else torch.inference_mode()
    with (
        grad_off,
        autocast(precision, device),
        progress_bar(length, desc, "tok", unit_scale=True, disable=not show
                     or not distributed.is_main()) as bar,
    ):  # fmt: skip
        mine_only = _every(eval_batches(tokens, block_size, batch_size), world, rank)
        for batch in prefetched(mine_only, device):
            mine += 1
            nll = chunked_next_token_loss(model, batch, reduction="none")  # (B, T-1) nats
            nats += nll.sum(dtype=torch.float64)
            total_tokens += nll.numel()
            if byte_table is not None:
                nbytes += byte_table[batch[:, 1:]].sum()  # bytes of the targets
            bar.update(batch.numel() * world)
    batches = math.ceil(length // block_size / batch_size) + (length % block_size >= 2)
    total_nats, total_bytes = nats.item(), int(nbytes.item())
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


def eval_batch_size(model: torch.nn.Module, block_size: int, device: torch.device) -> int:
    """Blocks per forward pass for evaluation. On a GPU: as many as a quarter of the free
    memory holds (inference keeps one layer's activations, ~16 values of n_embd per token,
    plus the output-layer chunk); on a CPU: EVAL_TOKENS_CPU tokens' worth."""
    if device.type != "cuda":
        return max(1, EVAL_TOKENS_CPU // block_size)
    inner = unwrap(model)
    width = getattr(getattr(inner, "config", None), "n_embd", 1024)
    free, _ = torch.cuda.mem_get_info(device)
    per_token = 16 * width * 4 * 2  # activations, fp32, with headroom for the allocator
    return int(max(1, min(1024, free // 4 // (per_token * block_size))))


def _every(batches: Iterator[torch.Tensor], world: int, rank: int) -> Iterator[torch.Tensor]:
    """This rank's share: batches rank, rank + world, ..."""
    for i, batch in enumerate(batches):
        if i % world == rank:
            yield batch
