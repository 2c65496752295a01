"""Sampling text from a trained model: KV cache, batches of prompts, stop tokens, streaming.

    prompts (lists of token ids, any lengths) ─► left-pad to a common length
        ─► prefill: one forward over the prompts fills the KV cache
        ─► decode: one token per row per step, each step a forward of that token alone
        ─► stop when every row has produced a stop token (or max_new_tokens)

With the cache each step costs one token's forward instead of the whole context's. The
context window ends at block_size (the learned position table's end; RoPE's trained
length), so once a sequence is longer than that each step recomputes the last block_size
tokens, exactly as generation without a cache does: both paths give the same tokens
(tested for greedy decoding, every component combination, left-padded batches).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from tinylm.model import GPT, KVCache

FINISHED = -1
"""What `stream` yields for a row that has already stopped."""


@torch.no_grad()
def stream(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    stop_tokens: Sequence[int] = (),
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield each step's new token for every prompt, (B,) int64; temperature 0 = greedy.

    A row that produced one of stop_tokens (which is yielded) yields FINISHED after it;
    the stream ends when every row has stopped or after max_new_tokens steps.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    model.eval()
    device = model.lm_head.weight.device
    block_size = model.config.block_size
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    width = int(lengths.max())
    pad = width - lengths  # (B,) left padding of each row
    seq = torch.zeros(len(prompts), width, dtype=torch.long, device=device)  # (B, S)
    for row, p in enumerate(prompts):
        seq[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
    padded = bool(pad.any())
    stops = torch.tensor(list(stop_tokens), dtype=torch.long, device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    cache: KVCache | None = None

    for _ in range(max_new_tokens):
        if use_cache and seq.shape[1] <= block_size:
            if cache is None:  # prefill with the whole prompt
                cache = KVCache(model, len(prompts), pad if padded else None)
                logits = model(seq, cache=cache)[:, -1, :]  # (B, V)
            else:  # decode: only the newest token
                logits = model(seq[:, -1:], cache=cache)[:, -1, :]  # (B, V)
        else:  # recompute the last block_size tokens (no cache, or past the position table)
            cache = None
            logits = _window_logits(model, seq, pad if padded else None)
        next_token = sample_next(logits, temperature, top_k, top_p, generator).squeeze(1)  # (B,)
        yield torch.where(done, FINISHED, next_token)
        done |= torch.isin(next_token, stops)
        if bool(done.all()):
            return
        seq = torch.cat([seq, next_token[:, None]], dim=1)


def _window_logits(model: GPT, seq: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """Next-token logits (B, V) from the last block_size tokens of seq (B, S)."""
    start = max(0, seq.shape[1] - model.config.block_size)
    window = seq[:, start:]
    if pad is None or not bool((pad > start).any()):
        return model(window)[:, -1, :]
    cache = KVCache(model, seq.shape[0], (pad - start).clamp(min=0))  # for the padding mask
    return model(window, cache=cache)[:, -1, :]


def generate_batch(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    **options,
) -> list[list[int]]:
    """The new tokens of each prompt (a stop token, if produced, ends its list)."""
    new: list[list[int]] = [[] for _ in prompts]
    for step in stream(model, prompts, max_new_tokens, **options):
        for row, token in enumerate(step.tolist()):
            if token != FINISHED:
                new[row].append(token)
    return new


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    stop_token: int | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Extend idx (B, T) by up to max_new_tokens tokens; temperature 0 means greedy.

    Generation stops early once every row has produced stop_token (kept in the output);
    rows that stopped earlier are padded with it.
    """
    stops = () if stop_token is None else (stop_token,)
    steps = [
        torch.where(t == FINISHED, stop_token if stop_token is not None else FINISHED, t)
        for t in stream(
            model,
            idx.tolist(),
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            generator,
            stops,
            use_cache,
        )
    ]
    return torch.cat([idx, torch.stack(steps, dim=1)], dim=1) if steps else idx


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
