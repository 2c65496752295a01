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
"""Positions per output-layer chunk: 256×50257 logits (25 MB bf16, 51 MB fp32). Larger
chunks touch more memory per pass; smaller ones add their part into the V×C weight
gradient more often (`bench/bench.py --sections chunks` measures the trade)."""


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
    chunk_size: int = CHUNK_SIZE,
) -> torch.Tensor:
    """`next_token_loss(model(tokens), tokens, reduction)` without the full logits.

    model: a tinylm GPT, possibly wrapped (torch.compile, DDP); it is called once, as
    model(tokens, return_hidden=True), so wrappers see a normal forward. Under autocast
    the output-layer matmuls run in the autocast dtype, softmax and sums in fp32.
    reduction "none" ((B, T-1) nats) is for evaluation and carries no gradient.
    """
    B, T = tokens.shape
    if _unwrap(model).config.logit_softcap > 0:  # the fused kernel knows no soft-cap: the
        return next_token_loss(model(tokens), tokens, reduction)  # plain path, full logits
    hidden = model(tokens, return_hidden=True)  # (B, T, C)
    weight = _unwrap(model).lm_head.weight  # (V, C)
    h = hidden[:, :-1, :].reshape(-1, hidden.shape[-1])  # (N, C), N = B*(T-1): position t ...
    targets = tokens[:, 1:].reshape(-1)  # (N,) ... predicts token t+1
    device = h.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
    if reduction == "none":
        with torch.no_grad():
            return _chunk_losses(h, weight, targets, chunk_size, dtype).view(B, T - 1)
    total = _LinearCrossEntropy.apply(h, weight, targets, chunk_size, dtype)  # sum of nats
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / targets.numel()
    raise ValueError(f"unknown reduction {reduction!r}; use mean, sum or none")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The GPT inside torch.compile's and DDP's wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def _chunk_losses(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int, dtype: torch.dtype
) -> torch.Tensor:
    """Per-position nats (N,), fp32, a chunk of positions at a time (no gradients)."""
    w = weight.to(dtype)
    out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    for i in range(0, h.shape[0], chunk):
        logits = h[i : i + chunk].to(dtype) @ w.T  # (n, V)
        out[i : i + chunk] = F.cross_entropy(
            logits.float(), targets[i : i + chunk], reduction="none"
        )
    return out


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
                torch.log_softmax(logits[:n], dim=-1, dtype=torch.float32, out=logp[:n])
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
