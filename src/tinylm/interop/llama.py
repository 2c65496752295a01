"""The modern family: tinylm's RoPE + RMSNorm + SwiGLU GPT as transformers' Llama or Qwen3.

transformers' LlamaForCausalLM is the same network as a tinylm model with
positions=rope, norm=rmsnorm, activation=swiglu (and no soft-cap), checked point by point:

    RoPE       "rotate half" layout (channel i pairs with i + hs/2), theta = rope_base,
               angles in fp32: tinylm's Rotary uses the same layout, so no permutation
    RMSNorm    x / sqrt(mean(x^2) + eps) * weight, no gain offset (weight, not 1 + weight);
               rms_norm_eps = norm_eps. A gainless tinylm norm exports a gain of ones.
    attention  q_proj | k_proj | v_proj are the row blocks of tinylm's fused qkv
               (n_head, n_kv_head, n_kv_head heads of head_dim); scores scaled by
               head_dim^-0.5; kv head j serves query heads j*g..j*g+g-1 in both
    MLP        down(silu(gate(x)) * up(x)); gate | up are the halves of tinylm's fc
    biases     attention_bias and mlp_bias both = model.bias (o_proj follows attention_bias)

Qwen3ForCausalLM is Llama plus q_norm / k_norm: an RMSNorm over each head's queries and
keys before RoPE, one gain shared by the heads, which is tinylm's qk_norm. Its MLP has no
biases, so Qwen3 takes bias=false models only.

config.json also carries a `tinylm` key with what transformers has no field for
(norm_gain, dropout), so an import gives back the very model that was exported.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.interop.family import Family, check_shape, refuse_extra

# Block parameters: tinylm name -> the transformers names it is the row-concatenation of.
_BLOCK = {
    "ln_1.weight": ["input_layernorm.weight"],
    "ln_2.weight": ["post_attention_layernorm.weight"],
    "attn.qkv.weight": ["self_attn.q_proj.weight", "self_attn.k_proj.weight",
                        "self_attn.v_proj.weight"],
    "attn.qkv.bias": ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"],
    "attn.proj.weight": ["self_attn.o_proj.weight"],
    "attn.proj.bias": ["self_attn.o_proj.bias"],
    "attn.q_norm.weight": ["self_attn.q_norm.weight"],
    "attn.k_norm.weight": ["self_attn.k_norm.weight"],
    "mlp.fc.weight": ["mlp.gate_proj.weight", "mlp.up_proj.weight"],
    "mlp.fc.bias": ["mlp.gate_proj.bias", "mlp.up_proj.bias"],
    "mlp.proj.weight": ["mlp.down_proj.weight"],
    "mlp.proj.bias": ["mlp.down_proj.bias"],
}  # fmt: skip
_TOP = {"wte.weight": "model.embed_tokens.weight", "ln_f.weight": "model.norm.weight",
        "lm_head.weight": "lm_head.weight"}  # fmt: skip

# transformers name (after model.layers.N.) -> llama.cpp (GGUF) name, for `--format gguf`.
_GGUF_BLOCK = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GGUF_TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}

# What a config.json means when a key is absent (transformers' LlamaConfig defaults).
LLAMA_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,
    "head_dim": None,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "rope_parameters": None,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "mlp_bias": False,
    "attention_dropout": 0.0,
    "pretraining_tp": 1,
    "use_sliding_window": False,
}
# Qwen3Config's defaults where they differ: a config.json without head_dim means 128.
QWEN3_DEFAULTS: dict[str, Any] = {
    **LLAMA_DEFAULTS,
    "vocab_size": 151936,
    "intermediate_size": 22016,
    "num_key_value_heads": 32,
    "head_dim": 128,
    "max_position_embeddings": 32768,
}


class LlamaFamily(Family):
    name = "llama"
    model_type = "llama"
    architecture = "LlamaForCausalLM"
    config_class = "LlamaConfig"
    description = "the Llama architecture: RoPE, RMSNorm, SwiGLU MLP"
    qk_norm = False
    defaults = LLAMA_DEFAULTS

    def refusal(self, model: ModelConfig) -> str | None:
        what = self.architecture
        if model.positions != "rope":
            return f"model.positions={model.positions}: {what} has rotary positions only"
        if model.norm != "rmsnorm":
            return f"model.norm={model.norm}: {what} has RMSNorm only"
        if model.activation != "swiglu":
            return f"model.activation={model.activation}: {what} has a SwiGLU MLP only"
        if model.logit_softcap:
            return f"model.logit_softcap={model.logit_softcap:g}: {what} has no logit soft-cap"
        if model.qk_norm != self.qk_norm:
            return (
                "model.qk_norm=true: LlamaForCausalLM has no QK-norm (Qwen3 has)"
                if model.qk_norm
                else f"model.qk_norm=false: {what} always normalises queries and keys"
            )
        return None

    def hf_config(self, model: ModelConfig, bos_id: int, eos_id: int) -> dict[str, Any]:
        m = model
        return {
            "architectures": [self.architecture],
            "vocab_size": m.vocab_size,
            "hidden_size": m.n_embd,
            "intermediate_size": m.hidden_size,
            "num_hidden_layers": m.n_layer,
            "num_attention_heads": m.n_head,
            "num_key_value_heads": m.kv_heads,
            "head_dim": m.n_embd // m.n_head,
            "hidden_act": "silu",
            "max_position_embeddings": m.block_size,
            "rms_norm_eps": m.norm_eps,
            "tie_word_embeddings": m.tie_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_base},
            "attention_bias": m.bias,
            "mlp_bias": m.bias,
            "attention_dropout": m.dropout,
            "bos_token_id": bos_id,
            "eos_token_id": eos_id,
            "tinylm": {"norm_gain": m.norm_gain, "dropout": m.dropout},
        }

    def model_config(self, hf: dict[str, Any], where: str) -> ModelConfig:
        c = {**self.defaults, **{k: v for k, v in hf.items() if k in self.defaults}}
        heads, width = c["num_attention_heads"], c["hidden_size"]
        rope = c["rope_parameters"] or {"rope_type": "default", "rope_theta": c["rope_theta"]}
        checks = [
            (c["hidden_act"] == "silu", f"hidden_act={c['hidden_act']!r} (tinylm's gated MLP "
             "uses silu)"),
            (rope.get("rope_type", "default") == "default" and not c["rope_scaling"],
             f"rope_type={rope.get('rope_type')!r} (scaled RoPE)"),
            (c["pretraining_tp"] == 1, f"pretraining_tp={c['pretraining_tp']}"),
            (not c["use_sliding_window"], "use_sliding_window=true"),
            (c["head_dim"] in (None, width // heads),
             f"head_dim={c['head_dim']} (tinylm's is hidden_size / num_attention_heads)"),
            (c["attention_bias"] == c["mlp_bias"] or self.qk_norm,
             "attention_bias != mlp_bias (tinylm has one bias switch)"),
            (not (self.qk_norm and c["attention_bias"]),
             "attention_bias=true with Qwen3's bias-free MLP (tinylm has one bias switch)"),
        ]  # fmt: skip
        for ok, what in checks:
            if not ok:
                raise TinyLMError(f"{where}: {what} is not supported by tinylm")
        hints = hf.get("tinylm") if isinstance(hf.get("tinylm"), dict) else {}
        model = ModelConfig(
            vocab_size=c["vocab_size"],
            block_size=c["max_position_embeddings"],
            n_layer=c["num_hidden_layers"],
            n_head=heads,
            n_embd=width,
            dropout=float(hints.get("dropout", c["attention_dropout"])),
            bias=bool(c["attention_bias"]),
            tie_embeddings=bool(c["tie_word_embeddings"]),
            activation="swiglu",
            mlp_hidden=c["intermediate_size"],
            norm="rmsnorm",
            norm_gain=bool(hints.get("norm_gain", True)),
            norm_eps=float(c["rms_norm_eps"]),
            positions="rope",
            rope_base=float(rope.get("rope_theta", 10000.0)),
            qk_norm=self.qk_norm,
            n_kv_head=c["num_key_value_heads"] or heads,
        )
        if model.kv_heads == model.n_head:
            model = dataclasses.replace(model, n_kv_head=0)
        if model.hidden_size == ModelConfig(n_embd=width, activation="swiglu").hidden_size:
            model = dataclasses.replace(model, mlp_hidden=0)
        return model

    def to_hf(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The weights under transformers names: fused tensors split, gains of ones for a
        gainless tinylm norm, a tied output layer left out (transformers ties it on load)."""
        state = model.state_dict()
        out = {}
        for name, hf_names in self._names(model.config).items():
            if name not in state:  # a gainless norm: transformers' gain is ones
                out[hf_names[0]] = torch.ones(self._norm_size(model.config, name))
                continue
            tensor = state[name]
            parts = tensor.split(self._split_sizes(model.config, name)) if len(hf_names) > 1 else (
                [tensor])  # fmt: skip
            for hf_name, part in zip(hf_names, parts, strict=True):
                out[hf_name] = part.detach().contiguous().clone()
        return out

    def from_hf(
        self, tensors: dict[str, torch.Tensor], model: torch.nn.Module, where: str
    ) -> dict[str, torch.Tensor]:
        state = model.state_dict()
        out, used = {}, set()
        for name, hf_names in self._names(model.config).items():
            missing = [n for n in hf_names if n not in tensors]
            if missing:
                raise TinyLMError(f"{where}: weight {missing[0]!r} is missing")
            used.update(hf_names)
            if name not in state:  # tinylm's norm has no gain: the file's must be ones
                if not torch.all(tensors[hf_names[0]] == 1):
                    raise TinyLMError(
                        f"{where}: {hf_names[0]!r} is not all ones, but config.json says the "
                        "norms have no gain (tinylm.norm_gain=false)"
                    )
                continue
            tensor = torch.cat([tensors[n] for n in hf_names]) if len(hf_names) > 1 else (
                tensors[hf_names[0]])  # fmt: skip
            check_shape(where, "+".join(hf_names), tensor, state[name].shape)
            out[name] = tensor.contiguous()
        if model.config.tie_embeddings:
            out["lm_head.weight"] = out["wte.weight"]  # one tensor, two names in tinylm
        if model.config.tie_embeddings and "lm_head.weight" in tensors:
            if not torch.equal(tensors["lm_head.weight"], tensors["model.embed_tokens.weight"]):
                raise TinyLMError(
                    f"{where}: tie_word_embeddings is true but lm_head.weight differs from "
                    "model.embed_tokens.weight; set tie_word_embeddings to false in config.json"
                )
            used.add("lm_head.weight")
        refuse_extra(where, tensors, used)
        return out

    def card_rows(self, model: ModelConfig) -> list[tuple[str, str]]:
        m = model
        heads = f"n_head {m.n_head}" + (
            f" (n_kv_head {m.kv_heads}, grouped-query)" if m.kv_heads != m.n_head else ""
        )
        norm = f"RMSNorm (eps {m.norm_eps:g})" + ("" if m.norm_gain else ", no learned gain")
        return [
            ("architecture", f"{self.architecture}: n_layer {m.n_layer}, {heads}, "
             f"n_embd {m.n_embd}"),
            ("MLP", f"SwiGLU, {m.n_embd} → 2 × {m.hidden_size} → {m.n_embd}"),
            ("positions", f"rotary (RoPE, theta {m.rope_base:g}), context {m.block_size}"),
            ("normalisation", norm + (", and on queries and keys (QK-norm)" if m.qk_norm else "")),
            ("biases", "yes" if m.bias else "none"),
        ]  # fmt: skip

    # --- llama.cpp (GGUF) ------------------------------------------------------------

    gguf_arch = "llama"
    gguf_interleave_rope = True
    """llama.cpp's llama graph rotates adjacent channel pairs (2i, 2i+1), where tinylm and
    transformers pair i with i + hs/2; its qwen3 graph uses the rotate-half (NeoX) layout."""

    def gguf_hparams(self, model: ModelConfig) -> dict[str, int | float]:
        m, head_dim = model, model.n_embd // model.n_head
        return {
            "context_length": m.block_size,
            "embedding_length": m.n_embd,
            "feed_forward_length": m.hidden_size,
            "block_count": m.n_layer,
            "attention.head_count": m.n_head,
            "attention.head_count_kv": m.kv_heads,
            "attention.key_length": head_dim,
            "attention.value_length": head_dim,
            "attention.layer_norm_rms_epsilon": float(m.norm_eps),
            "rope.dimension_count": head_dim,
            "rope.freq_base": float(m.rope_base),
            "vocab_size": m.vocab_size,
        }

    def gguf_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The transformers tensors (to_hf) under llama.cpp's names; for the llama graph the
        query and key rows of each head reordered from rotate-half to interleaved pairs."""
        config, out = model.config, {}
        hs = config.n_embd // config.n_head
        for hf_name, tensor in self.to_hf(model).items():
            module, _, param = hf_name.rpartition(".")
            if module.startswith("model.layers."):
                index, rest = module.removeprefix("model.layers.").split(".", 1)
                name = _GGUF_BLOCK[rest]
                if self.gguf_interleave_rope and name in ("attn_q", "attn_k"):
                    tensor = _interleave_heads(tensor, hs)
                out[f"blk.{index}.{name}.{param}"] = tensor
            else:
                out[f"{_GGUF_TOP[module]}.{param}"] = tensor
        return out

    # --- the weight-name map ---------------------------------------------------------

    def _names(self, config: ModelConfig) -> dict[str, list[str]]:
        """Every tinylm parameter name (present or, for gainless norms, absent) -> the
        transformers names it is made of, in the model's own order."""
        names: dict[str, list[str]] = {"wte.weight": [_TOP["wte.weight"]]}
        for i in range(config.n_layer):
            for key, hf in _BLOCK.items():
                if key.endswith(".bias") and not config.bias:
                    continue
                if "_norm." in key and not config.qk_norm:
                    continue
                names[f"blocks.{i}.{key}"] = [f"model.layers.{i}.{n}" for n in hf]
        names["ln_f.weight"] = [_TOP["ln_f.weight"]]
        if not config.tie_embeddings:
            names["lm_head.weight"] = [_TOP["lm_head.weight"]]
        return names

    @staticmethod
    def _split_sizes(config: ModelConfig, name: str) -> list[int]:
        """Row sizes of the pieces of a fused tensor (qkv or the SwiGLU fc)."""
        hs = config.n_embd // config.n_head
        if ".attn.qkv." in name:
            return [config.n_embd, config.kv_heads * hs, config.kv_heads * hs]
        return [config.hidden_size, config.hidden_size]  # mlp.fc: gate | up

    @staticmethod
    def _norm_size(config: ModelConfig, name: str) -> int:
        return config.n_embd // config.n_head if "_norm." in name else config.n_embd


class Qwen3Family(LlamaFamily):
    name = "qwen3"
    model_type = "qwen3"
    architecture = "Qwen3ForCausalLM"
    config_class = "Qwen3Config"
    description = "the Qwen3 architecture: RoPE, RMSNorm, SwiGLU MLP, QK-norm"
    qk_norm = True
    defaults = QWEN3_DEFAULTS

    def refusal(self, model: ModelConfig) -> str | None:
        reason = super().refusal(model)
        if reason is None and model.bias:
            return "model.bias=true: Qwen3ForCausalLM's MLP has no biases"
        return reason

    gguf_arch = "qwen3"
    gguf_interleave_rope = False

    def hf_config(self, model: ModelConfig, bos_id: int, eos_id: int) -> dict[str, Any]:
        config = super().hf_config(model, bos_id, eos_id)
        del config["mlp_bias"]
        config["use_sliding_window"] = False
        return config


def _interleave_heads(tensor: torch.Tensor, head_size: int) -> torch.Tensor:
    """Rows of each head from rotate-half order (0..hs/2-1 | hs/2..hs-1) to pairs
    (0, hs/2, 1, hs/2+1, ...), so a rotation of adjacent pairs is tinylm's rotation.
    tensor: (heads * hs, in) weight or (heads * hs,) bias."""
    rest = tensor.shape[1:]
    heads = tensor.shape[0] // head_size
    halves = tensor.reshape(heads, 2, head_size // 2, *rest)  # (heads, 2, hs/2, ...)
    return halves.transpose(1, 2).reshape(tensor.shape).contiguous()


LLAMA = LlamaFamily()
QWEN3 = Qwen3Family()
