"""The next-token loss: the one place where predictions and targets are aligned.

The reference study's first version forgot this shift and reached near-zero loss after
one epoch: without it the model is asked to predict the token it is looking at.
Every caller (training, evaluation, tests) uses one of the two functions here; nothing
else shifts.

- `next_token_loss(logits, tokens)`: the plain version, from full (B, T, V) logits.
- `chunked_next_token_loss(model, tokens)`: the same loss (value and gradients) from the
  model's hidden states, computing the output layer and its cross-entropy a chunk of
  positions at a time. With GPT-2's 50,257-token vocabulary the output layer is most of
  the model's compute and, in the plain version, most of its memory: a 32×128 batch
  has 4096×50257 fp32 logits (823 MB) plus a gradient of the same size. Here no more
  than `chunk_size`×V exist at once, and the gradients of the hidden states and of the
  output weight are computed in the forward pass, so backward does no extra work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_SIZE = 256
"""Positions per output-layer chunk on a CPU with GPT-2's vocabulary: 256×50257 logits (25
MB bf16, 51 MB fp32). Larger chunks touch more memory per pass; smaller ones add their part
into the V×C weight gradient more often (`bench/bench.py --sections chunks` measures the
trade). `chunk_positions` keeps this many logits per chunk for any vocabulary."""
CPU_CHUNK_LOGITS = CHUNK_SIZE * 50257
"""Logits per chunk on a CPU (12.9M): a small vocabulary gets proportionally more positions,
e.g. all 2,032 of a 16×128 batch at 256 byte tokens, one matmul instead of eight."""
GPU_MEMORY_SHARE = 0.25
"""On a GPU, chunk buffers (logits, fp32 log-probabilities and the gradient) may use this
share of the free memory; the whole batch in one chunk whenever they fit."""


def chunk_positions(n: int, vocab_size: int, device: torch.device, dtype: torch.dtype) -> int:
    """Positions per output-layer chunk for `n` positions: all of them when their logits fit
    the device's budget (one matmul and one softmax, no Python loop), else as many as do."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        per_position = vocab_size * (torch.finfo(dtype).bits // 8 + 4 + 4)  # logits, logp, grad
        budget = int((free + cached) * GPU_MEMORY_SHARE) // per_position
    else:
        budget = CPU_CHUNK_LOGITS // vocab_size
    return max(1, min(n, max(budget, 1)))


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


def chunked_next_token_loss(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    reduction: str = "mean",
    chunk_size: int = 0,
) -> torch.Tensor:
    """`next_token_loss(model(tokens), tokens, reduction)` without the full logits.

    model: a tinylm GPT, possibly wrapped (torch.compile, DDP); it is called once, as
    model(tokens, return_hidden=True), so wrappers see a normal forward. Under autocast
    the output-layer matmuls run in the autocast dtype, softmax and sums in fp32.
    reduction "none" ((B, T-1) nats) is for evaluation and carries no gradient.
    chunk_size: positions per output-layer chunk; 0 lets `chunk_positions` choose.
    """
    B, T = tokens.shape
    if unwrap(model).config.logit_softcap > 0:  # the fused kernel knows no soft-cap: the
        return next_token_loss(model(tokens), tokens, reduction)  # plain path, full logits
    hidden = model(tokens, return_hidden=True)  # (B, T, C)
    weight = unwrap(model).lm_head.weight  # (V, C)
    h = hidden[:, :-1, :].reshape(-1, hidden.shape[-1])  # (N, C), N = B*(T-1): position t ...
    targets = tokens[:, 1:].reshape(-1)  # (N,) ... predicts token t+1
    device = h.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
    if chunk_size <= 0:
        chunk_size = chunk_positions(h.shape[0], weight.shape[0], h.device, dtype)
    if reduction == "none":
        with torch.no_grad():
            return _chunk_losses(h, weight, targets, chunk_size, dtype).view(B, T - 1)
    total = _LinearCrossEntropy.apply(h, weight, targets, chunk_size, dtype)  # sum of nats
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / targets.numel()
    raise ValueError(f"unknown reduction {reduction!r}; use mean, sum or none")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The GPT inside torch.compile's and DDP's wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def _chunk_losses(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int, dtype: torch.dtype
) -> torch.Tensor:
    """Per-position nats (N,), fp32, a chunk of positions at a time (no gradients), in
    chunk-sized buffers reused by every chunk (as _LinearCrossEntropy's forward)."""
    N, V = h.shape[0], weight.shape[0]
    chunk = min(chunk, N)
    with torch.autocast(h.device.type, enabled=False):
        w = weight.to(dtype)  # (V, C)
        logits = torch.empty(chunk, V, dtype=dtype, device=h.device)
        logp = torch.empty(chunk, V, dtype=torch.float32, device=h.device)
        out = torch.empty(N, dtype=torch.float32, device=h.device)
        for i in range(0, N, chunk):
            h_c, t_c = h[i : i + chunk].to(dtype), targets[i : i + chunk]  # (n, C), (n,)
            n = len(t_c)
            torch.mm(h_c, w.T, out=logits[:n])  # (n, V)
            _log_softmax_fp32(logits[:n], logp[:n])
            out[i : i + n] = logp[:n].gather(1, t_c[:, None]).squeeze(1).neg_()
    return out


def _log_softmax_fp32(logits: torch.Tensor, out: torch.Tensor) -> None:
    """out = log_softmax(logits) in fp32 (n, V). From bf16/fp16 logits: convert, then
    log-softmax in place. The same numbers, bit for bit, as log_softmax(dtype=float32),
    whose mixed-dtype CPU kernel is several times slower (4.2x for 256x50257,
    bench/log_softmax_ab.py; on a GPU the fused cast is the faster one)."""
    if logits.dtype == torch.float32 or logits.device.type == "cuda":
        torch.log_softmax(logits, dim=-1, dtype=torch.float32, out=out)
    else:
        torch.log_softmax(out.copy_(logits), dim=-1, out=out)


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(h_i W^T, target_i), with both gradients computed chunk by chunk in forward.

    For a chunk: logits = h W^T; p = softmax(logits); dloss/dlogits = p - onehot(target);
    dh = (p - onehot) W and dW += (p - onehot)^T h. Backward only scales them by the
    incoming gradient (a scalar: the loss is a sum).
    """

    @staticmethod
    def forward(ctx, h, weight, targets, chunk, dtype):  # noqa: ANN001 (autograd signature)
        device = h.device.type
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        N, V = h.shape[0], weight.shape[0]
        chunk = min(chunk, N)
        # fp16 cannot hold probabilities near 1/V well: scale them up before the cast
        # and back down after the matmuls (bf16 and fp32 have fp32's exponent range).
        up = 1024.0 if dtype == torch.float16 else 1.0
        with torch.autocast(device, enabled=False):
            w = weight.to(dtype)  # (V, C)
            # Chunk-sized buffers reused by every chunk: a fresh 50 MB tensor per chunk
            # would be fresh pages from the OS each time, and page faults cost as much
            # as the arithmetic here.
            logits = torch.empty(chunk, V, dtype=dtype, device=h.device)
            logp = torch.empty(chunk, V, dtype=torch.float32, device=h.device)
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            grad_h = torch.empty_like(h, dtype=torch.float32) if need_grad else None
            grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_grad else None
            for i in range(0, N, chunk):
                h_c, t_c = h[i : i + chunk].to(dtype), targets[i : i + chunk]  # (n, C), (n,)
                n = len(t_c)
                rows = torch.arange(n, device=h.device)
                torch.mm(h_c, w.T, out=logits[:n])  # (n, V)
                _log_softmax_fp32(logits[:n], logp[:n])
                total -= logp[rows, t_c].sum()
                if need_grad:
                    p = logp[:n].exp_()  # softmax, in place (n, V)
                    p[rows, t_c] -= 1.0  # dloss/dlogits = p - onehot(target)
                    if up != 1.0:
                        p.mul_(up)
                    # In `dtype`, written over the logits once used. (exp straight into a
                    # bf16 output is slower on CPU: the converting kernel is not vectorised.)
                    g_c = logits[:n].copy_(p) if dtype != torch.float32 else p
                    grad_h[i : i + n] = g_c @ w  # (n, C)
                    if dtype == torch.float16:  # a (V, C) sum over n rows can pass 65504
                        grad_w.addmm_(g_c.T.float(), h_c.float())
                    else:
                        grad_w += g_c.T @ h_c  # (V, C)
            if need_grad:
                if up != 1.0:
                    grad_h /= up
                    grad_w /= up
                ctx.save_for_backward(grad_h, grad_w)
        ctx.h_dtype, ctx.w_dtype = h.dtype, weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):  # noqa: ANN001 (autograd signature)
        grad_h, grad_w = ctx.saved_tensors
        dh = (grad_h * grad_total).to(ctx.h_dtype) if ctx.needs_input_grad[0] else None
        dw = (grad_w * grad_total).to(ctx.w_dtype) if ctx.needs_input_grad[1] else None
        return dh, dw, None, None, None
