"""Sampling text from a trained model: KV cache, batches of prompts, stop tokens, streaming.

    prompts (lists of token ids, any lengths) ─► left-pad to a common length
        ─► prefill: one forward over the prompts fills the KV cache
        ─► decode: one token per row per step, each step a forward of that token alone
        ─► stop when every row has produced a stop token (or max_new_tokens)

With the cache each step costs one token's forward instead of the whole context's. The
context window ends at block_size (the learned position table's end; RoPE's trained
length), so once a sequence is longer than that each step recomputes the last block_size
tokens, exactly as generation without a cache does: both paths give the same tokens
(tested for greedy decoding over every value of every component, left-padded batches).
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
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return draw(probs, uniform(probs.shape[0], generator, probs.device))


def next_token_probs(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> torch.Tensor:
    """The distribution sampling draws from: logits (B, V) / temperature, restricted to the
    top_k likeliest and to the top_p nucleus -> probabilities (B, V) (temperature > 0)."""
    logits = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        logits = _nucleus(logits, top_p)
    return logits.softmax(dim=-1)


NUCLEUS_CANDIDATES = 1024
"""top_p looks among this many likeliest tokens first; only when they hold less than top_p
of the mass does it rank the whole vocabulary (sorting 50k logits costs milliseconds)."""


def _nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Drop each token whose better-ranked tokens already reach top_p (the best stays)."""
    V = logits.shape[-1]
    log_total = logits.logsumexp(dim=-1, keepdim=True)  # (B, 1)
    ranked, order = logits.topk(min(NUCLEUS_CANDIDATES, V), dim=-1)  # (B, k), best first
    probs = (ranked - log_total).exp()  # (B, k): true probabilities, over all V tokens
    if ranked.shape[-1] < V and not bool((probs.sum(dim=-1) >= top_p).all()):
        ranked, order = logits.sort(dim=-1, descending=True)  # the nucleus is wider: rank all
        probs = (ranked - log_total).exp()
    keep_ranked = probs.cumsum(dim=-1) - probs < top_p  # (B, k)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, keep_ranked)
    return logits.masked_fill(~keep, float("-inf"))


def uniform(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """n uniform numbers in [0, 1), (n, 1): what `draw` turns into tokens."""
    return torch.rand(n, 1, generator=generator, device=device)


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One index per row of probs (B, V) -> (B, 1), with those probabilities, from the
    uniform numbers u (B, 1): the inverse CDF. Exact, and ~10x faster than
    torch.multinomial over a 50k vocabulary on a CPU."""
    cdf = probs.float().cumsum(dim=-1)  # (B, V); a float64 cumsum is ~10x slower on a CPU
    # The first index whose cdf exceeds u * total: a zero-probability token never wins.
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=probs.shape[-1] - 1)
