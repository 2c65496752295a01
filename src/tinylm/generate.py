"""Sampling text from a trained model: temperature, top-k, top-p (nucleus), seeded.

This version recomputes the whole context each step (no KV cache), cropping it to the
model's block_size.
"""

from __future__ import annotations

import torch

from tinylm.model import GPT


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    stop_token: int | None = None,
) -> torch.Tensor:
    """Extend idx (B, T) by up to max_new_tokens tokens; temperature 0 means greedy.

    Generation stops early once every row has produced stop_token (kept in the output).
    """
    model.eval()
    block_size = model.config.block_size
    done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        logits = model(idx[:, -block_size:])[:, -1, :]  # (B, V): next-token logits
        next_token = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
        if stop_token is not None:
            next_token[done] = stop_token  # finished rows only pad with the stop token
            done |= next_token.squeeze(1) == stop_token
        idx = torch.cat([idx, next_token], dim=1)
        if stop_token is not None and bool(done.all()):
            break
    return idx


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One token per row from logits (B, V) -> (B, 1)."""
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p (the best stays).
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
