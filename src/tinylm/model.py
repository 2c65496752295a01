"""The GPT, readable top to bottom, with its components chosen by the config.

    tokens (B, T) ─► token embedding (+ learned positions) ─► dropout
                 ─► n_layer × Block(pre-norm attention, pre-norm MLP, residuals)
                 ─► final norm ─► output projection (no bias) (─► soft-cap) ─► logits (B, T, vocab)

The defaults are the reference study's "Mini-GPT" (GPT-2's block: learned positions,
LayerNorm, a 4x GELU MLP). ModelConfig swaps in the modern pieces, each in one place here:
RMSNorm (`make_norm`), rotary positions (`Rotary`, applied to q and k in the attention),
SwiGLU / squared-ReLU MLPs (`MLP`), QK-norm and grouped-query attention
(`CausalSelfAttention`), logit soft-capping and zero-initialised residual projections (`GPT`).

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
        # Module creation order fixes the RNG draws of the init: the reference presets'
        # weights for a given seed depend on it (tests/test_model_reference.py).
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        if config.positions == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned positions
        self.rotary = Rotary(config) if config.positions == "rope" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # Projections that write into the residual stream: zero (each block starts as the
        # identity) or GPT-2's init scaled so the stream's variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                if config.zero_init_proj:
                    nn.init.zeros_(param)
                else:
                    nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def forward(
        self,
        idx: torch.Tensor,
        *,
        return_hidden: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits for every position: idx (B, T) int64 -> (B, T, vocab_size) float.

        return_hidden: return the final norm's output (B, T, C) instead of logits (the
        soft-cap, if any, is then the caller's: see `tinylm.loss`).
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
        x = self.wte(idx)  # (B, T, C)
        if self.rotary is None:
            x = x + self.wpe(pos)
        rope = self.rotary(pos) if self.rotary is not None else None  # (cos, sin) or None
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache.layer(layer) if cache is not None else None, mask, rope)
        if cache is not None:
            cache.length += T
        x = self.ln_f(x)
        if return_hidden:
            return x  # (B, T, C)
        return softcap(self.lm_head(x), self.config.logit_softcap)  # (B, T, vocab_size)

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


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(logits / cap): logits squashed into (-cap, cap); cap 0 = unchanged."""
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


def make_norm(config: ModelConfig, dim: int) -> nn.Module:
    """The configured normalisation over the last dimension (size dim).

    LayerNorm keeps torch's parameter names (weight, bias), so the reference presets'
    checkpoints and GPT-2 exports are unchanged; without a gain it has no parameters.
    """
    if config.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=config.norm_eps, elementwise_affine=config.norm_gain)
    return nn.LayerNorm(
        dim, eps=config.norm_eps, elementwise_affine=config.norm_gain, bias=config.bias
    )


def norm_in_fp32(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """norm(x) computed in fp32 and returned in x's dtype, whatever the dtypes of x (bf16
    under autocast) and of the norm's parameters (bf16 in a model cast for inference)."""
    weight = norm.weight.float() if norm.weight is not None else None
    if isinstance(norm, nn.RMSNorm):
        y = F.rms_norm(x.float(), norm.normalized_shape, weight, norm.eps)
    else:
        bias = norm.bias.float() if norm.bias is not None else None
        y = F.layer_norm(x.float(), norm.normalized_shape, weight, bias, norm.eps)
    return y.to(x.dtype)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        kv: LayerCache | None = None,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv, mask, rope)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class CausalSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention; position t attends to positions <= t.

    One fused projection gives the n_head query heads and n_kv_head key and value heads
    (fewer kv heads: grouped-query attention, each serving n_head / n_kv_head query heads).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head = config.n_head, config.kv_heads
        self.n_embd = config.n_embd
        self.head_size = config.n_embd // config.n_head
        self.dropout = config.dropout
        kv_width = self.n_kv_head * self.head_size
        self.qkv = nn.Linear(config.n_embd, config.n_embd + 2 * kv_width, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)
        self.q_norm = make_norm(config, self.head_size) if config.qk_norm else None
        self.k_norm = make_norm(config, self.head_size) if config.qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        kv: LayerCache | None = None,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). With kv, k and v are appended to the cached ones and
        q attends to all of them; mask (B, 1, T, S) then says which it may see (None: all).
        rope: the rotary (cos, sin) of these T positions."""
        B, T, C = x.shape
        hs, nkv = self.head_size, self.n_kv_head
        q, k, v = self.qkv(x).split([C, nkv * hs, nkv * hs], dim=-1)  # (B, T, C|kv|kv)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        if self.q_norm is not None:  # in fp32 (under autocast q, k arrive in bf16)
            q, k = norm_in_fp32(self.q_norm, q), norm_in_fp32(self.k_norm, k)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if kv is not None:
            k, v = kv.append(k, v)  # each (B, nkv, S, hs), S = cached + T
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=kv is None,  # with a cache the mask (or a single query) says it all
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=nkv != self.n_head,  # kv head j serves query heads j*g .. j*g+g-1
        )  # (B, nh, T, hs), softmax(q k^T / sqrt(hs) + causal mask) v
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.resid_drop(self.proj(y))


class Rotary(nn.Module):
    """Rotary position embeddings: the (cos, sin) that rotate q and k by their positions.

    Layout as in transformers' Llama ("rotate half"): channel i of a head pairs with
    channel i + hs/2 and turns at frequency base^(-2i/hs). Frequencies and angles are
    computed in fp32 at every call, never stored: a buffer would be rounded by
    model.to(torch.bfloat16) (bf16 inference), turning positions by wrong angles.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.head_size, self.base = config.n_embd // config.n_head, config.rope_base

    def inv_freq(self, device: torch.device | None = None) -> torch.Tensor:
        """The rotation frequencies base^(-2i/hs), (hs/2,) fp32."""
        hs = self.head_size
        return 1.0 / (self.base ** (torch.arange(0, hs, 2, device=device).float() / hs))

    def forward(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos (T,) or (B, T) -> cos, sin of shape (1, 1, T, hs) or (B, 1, T, hs)."""
        angles = pos.float()[..., None] * self.inv_freq(pos.device)  # (..., T, hs/2)
        angles = torch.cat([angles, angles], dim=-1)  # (..., T, hs)
        if angles.dim() == 2:
            angles = angles[None]
        return angles.cos()[:, None], angles.sin()[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, nh, T, hs) by the positions' angles: x cos + rotate_half(x) sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)  # (B, nh, T, hs)
    return (x * cos + rotated * sin).to(x.dtype)


class MLP(nn.Module):
    """Position-wise feed-forward. gelu / gelu_tanh / relu2: C -> H -> act -> C.
    swiglu: one C -> 2H projection split into gate and up, then silu(gate) * up -> C."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.activation = config.activation
        H = config.hidden_size
        gated = config.activation == "swiglu"
        self.fc = nn.Linear(config.n_embd, 2 * H if gated else H, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.proj = nn.Linear(H, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # (B, T, H), or (B, T, 2H) gate | up
        if self.activation == "swiglu":
            gate, up = h.chunk(2, dim=-1)  # each (B, T, H)
            h = F.silu(gate) * up
        elif self.activation == "relu2":
            h = F.relu(h).square()
        else:
            h = self.gelu(h)
        return self.drop(self.proj(h))  # (B, T, C)


class LayerCache:
    """One block's cached keys and values: preallocated (B, nkv, block_size, hs) buffers."""

    def __init__(self, owner: KVCache, k: torch.Tensor, v: torch.Tensor) -> None:
        self.owner, self.k, self.v = owner, k, v

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nkv, T, hs) after the cached positions; return all of them."""
        start, T = self.owner.length, k.shape[2]
        self.k[:, :, start : start + T] = k
        self.v[:, :, start : start + T] = v
        return self.k[:, :, : start + T], self.v[:, :, : start + T]  # (B, nkv, S, hs)


class KVCache:
    """Keys and values of every block for a batch of sequences being generated.

    Rows of different lengths are left-padded to a common length: `pad` (B,) counts each
    row's padding, which no real token attends to and which shifts the row's positions so
    its first real token is at position 0 (as it would be alone). Keys are cached after
    the rotation, so RoPE rows keep their own positions too.
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
        shape = (batch_size, cfg.kv_heads, cfg.block_size, cfg.n_embd // cfg.n_head)
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
