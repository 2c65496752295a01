"""The GPT: the reference study's "Mini-GPT", readable top to bottom.

    tokens (B, T) ─► token embedding + position embedding ─► dropout
                 ─► n_layer × Block(pre-LayerNorm attention, pre-LayerNorm MLP, residuals)
                 ─► final LayerNorm ─► output projection (no bias) ─► logits (B, T, vocab)

The model returns logits (or, with return_hidden=True, the final hidden states that the
chunked loss in `tinylm.loss` turns into a loss without materialising all logits at once).
The next-token shift lives in `tinylm.loss`. A `KVCache` lets generation feed one new
token per step instead of the whole context. Nothing here knows about devices, precision
or distributed training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.config import ModelConfig


class GPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.vocab_size <= 0:  # 0 means "the dataset's": the trainer resolves it first
            raise ValueError("ModelConfig.vocab_size must be set (the tokenizer's vocabulary)")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned positions
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: scale the init of projections that write into the residual stream,
        # so its variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def forward(
        self,
        idx: torch.Tensor,
        *,
        return_hidden: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits for every position: idx (B, T) int64 -> (B, T, vocab_size) float.

        return_hidden: return the final LayerNorm's output (B, T, C) instead of logits.
        cache: idx continues the sequence held in the cache (positions cache.length onward);
        its keys and values are appended to it.
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if self.config.block_size < start + T:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}"
            )
        if cache is None:
            pos = torch.arange(T, device=idx.device)  # (T,)
            mask = None  # plain causal attention
        else:
            pos = cache.positions(T)  # (B, T): left padding shifts each row's positions
            mask = cache.attention_mask(T)  # (B, 1, T, start + T) or None
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache.layer(layer) if cache is not None else None, mask)
        if cache is not None:
            cache.length += T
        x = self.ln_f(x)
        return x if return_hidden else self.lm_head(x)  # (B, T, C) or (B, T, vocab_size)

    def num_parameters(self) -> int:
        """Trainable parameters, each shared tensor counted once."""
        return sum(p.numel() for p in self.parameters())

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        kv: LayerCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv, mask)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class CausalSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention; position t attends to positions <= t."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        kv: LayerCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). With kv, k and v are appended to the cached ones and
        q attends to all of them; mask (B, 1, T, S) then says which it may see (None: all)."""
        B, T, C = x.shape
        hs = C // self.n_head  # head size
        q, k, v = self.qkv(x).split(self.n_embd, dim=-1)  # each (B, T, C)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if kv is not None:
            k, v = kv.append(k, v)  # each (B, nh, S, hs), S = cached + T
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=kv is None,  # with a cache the mask (or a single query) says it all
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, nh, T, hs), softmax(q k^T / sqrt(hs) + causal mask) v
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> GELU -> C."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.gelu(self.fc(x))))  # (B, T, C)


class LayerCache:
    """One block's cached keys and values: preallocated (B, nh, block_size, hs) buffers."""

    def __init__(self, owner: KVCache, k: torch.Tensor, v: torch.Tensor) -> None:
        self.owner, self.k, self.v = owner, k, v

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) after the cached positions; return all of them."""
        start, T = self.owner.length, k.shape[2]
        self.k[:, :, start : start + T] = k
        self.v[:, :, start : start + T] = v
        return self.k[:, :, : start + T], self.v[:, :, : start + T]  # (B, nh, S, hs)


class KVCache:
    """Keys and values of every block for a batch of sequences being generated.

    Rows of different lengths are left-padded to a common length: `pad` (B,) counts each
    row's padding, which no real token attends to and which shifts the row's positions so
    its first real token is at position 0 (as it would be alone).
    """

    def __init__(
        self,
        model: GPT,
        batch_size: int,
        pad: torch.Tensor | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        cfg = model.config
        param = model.lm_head.weight
        shape = (batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.length = 0  # positions filled so far (the same for every row)
        self.pad = pad  # (B,) int64, or None when no row is padded
        self.layers = [
            LayerCache(
                self,
                torch.empty(shape, dtype=dtype or param.dtype, device=param.device),
                torch.empty(shape, dtype=dtype or param.dtype, device=param.device),
            )
            for _ in range(cfg.n_layer)
        ]

    def layer(self, i: int) -> LayerCache:
        return self.layers[i]

    def positions(self, T: int) -> torch.Tensor:
        """Position ids of the next T tokens: (T,), or (B, T) with padding."""
        device = self.layers[0].k.device
        pos = torch.arange(self.length, self.length + T, device=device)  # (T,)
        if self.pad is None:
            return pos
        return (pos[None, :] - self.pad[:, None]).clamp(min=0)  # (B, T)

    def attention_mask(self, T: int) -> torch.Tensor | None:
        """Which of the S = length + T keys each of the T new queries may attend to.

        None when every query may see every key (one new token, no padding). Padding
        queries see only themselves, so no row of the mask is empty (an empty row
        would give NaN and spread through the padded keys' values).
        """
        if self.pad is None and T == 1:
            return None
        device = self.layers[0].k.device
        S = self.length + T
        q_pos = torch.arange(self.length, S, device=device)[:, None]  # (T, 1)
        k_pos = torch.arange(S, device=device)[None, :]  # (1, S)
        mask = (k_pos <= q_pos)[None, None]  # (1, 1, T, S) causal
        if self.pad is not None:
            real_key = k_pos[None] >= self.pad[:, None, None]  # (B, 1, S)
            mask = mask & (real_key | (k_pos == q_pos)[None])[:, None]  # (B, 1, T, S)
        return mask
