"""The GPT-2 family: tinylm's reference GPT and transformers' GPT2LMHeadModel.

Both are pre-LayerNorm decoders with learned positions, a fused q|k|v projection split
into heads the same way, scores scaled by 1/sqrt(head_size), a GELU MLP and a bias-free
output layer. Only names and one layout differ: GPT-2 keeps its block projections as
`Conv1D`, whose weight is the transpose of an `nn.Linear` weight (in, out) vs (out, in).

This module maps configs and weights both ways with torch only (no transformers), and
refuses, in one line, every option that one side cannot express. `GPT2` is the family
adapter (see family.py) the export and import code use.
"""

from __future__ import annotations

from typing import Any

import torch

from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.interop.family import Family

# tinylm activation -> GPT-2 `activation_function` written on export.
ACTIVATION_TO_GPT2 = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
# GPT-2 `activation_function` -> tinylm activation accepted on import.
ACTIVATION_FROM_GPT2 = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}

# Block sub-modules: tinylm name -> GPT-2 name. All four are Linear vs Conv1D (transposed).
_BLOCK_LINEARS = {
    "attn.qkv": "attn.c_attn",
    "attn.proj": "attn.c_proj",
    "mlp.fc": "mlp.c_fc",
    "mlp.proj": "mlp.c_proj",
}
# tinylm name -> llama.cpp (GGUF) name, for `--format gguf`; every Linear keeps torch's
# (out, in) layout, which is what ggml's mul_mat expects.
_GGUF_TOP = {
    "wte": "token_embd",
    "wpe": "position_embd",
    "ln_f": "output_norm",
    "lm_head": "output",
}
_GGUF_BLOCK = {
    "ln_1": "attn_norm",
    "attn.qkv": "attn_qkv",
    "attn.proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.fc": "ffn_up",
    "mlp.proj": "ffn_down",
}
# Buffers in older GPT-2 checkpoints (the causal mask), not weights: skipped on import.
_GPT2_BUFFERS = (".attn.bias", ".attn.masked_bias")


def refusal(model: ModelConfig) -> str | None:
    """Why GPT-2 cannot express a tinylm model config (None: it can, exactly)."""
    if model.positions != "learned":
        return f"model.positions={model.positions} has no GPT-2 equivalent (learned positions)"
    if model.norm != "layernorm":
        return f"model.norm={model.norm}: GPT-2 has LayerNorm only"
    if not model.norm_gain:
        return "model.norm_gain=false: GPT-2's LayerNorm always has a gain and a bias"
    if not model.bias:
        return (
            "model.bias=false has no GPT-2 equivalent (GPT-2 always has biases); with learned "
            "positions only model.bias=true exports (bias-free models export with "
            "model.positions=rope as Llama)"
        )
    if model.activation not in ACTIVATION_TO_GPT2:
        return f"model.activation={model.activation!r} has no GPT-2 equivalent"
    if model.qk_norm:
        return "model.qk_norm=true has no GPT-2 equivalent"
    if model.kv_heads != model.n_head:
        return (
            f"model.n_kv_head={model.n_kv_head} (grouped-query attention) has no GPT-2 equivalent"
        )
    if model.logit_softcap:
        return f"model.logit_softcap={model.logit_softcap:g} has no GPT-2 equivalent"
    return None


def check_exportable(model: ModelConfig) -> None:
    """Refuse, in one line, tinylm options that GPT-2 cannot express."""
    reason = refusal(model)
    if reason is not None:
        raise TinyLMError(reason)


def gpt2_config(model: ModelConfig, bos_id: int, eos_id: int) -> dict[str, Any]:
    """GPT2Config keyword arguments for a tinylm model; refuses what GPT-2 cannot express."""
    check_exportable(model)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": model.vocab_size,
        "n_positions": model.block_size,
        "n_embd": model.n_embd,
        "n_layer": model.n_layer,
        "n_head": model.n_head,
        "n_inner": model.hidden_size,
        "activation_function": ACTIVATION_TO_GPT2[model.activation],
        "resid_pdrop": model.dropout,
        "embd_pdrop": model.dropout,
        "attn_pdrop": model.dropout,
        "layer_norm_epsilon": model.norm_eps,
        "tie_word_embeddings": model.tie_embeddings,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
    }


# What a GPT-2 config.json means when a key is absent (transformers' GPT2Config defaults).
GPT2_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257,
    "n_positions": 1024,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_inner": None,
    "activation_function": "gelu_new",
    "resid_pdrop": 0.1,
    "embd_pdrop": 0.1,
    "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5,
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
}


def model_config_from_gpt2(hf: dict[str, Any], where: str) -> ModelConfig:
    """A tinylm ModelConfig from a GPT-2 config.json; refuses what tinylm cannot express."""
    if hf.get("model_type") != "gpt2":
        raise TinyLMError(
            f"{where}: model_type {hf.get('model_type')!r} is not 'gpt2'; "
            "tinylm imports GPT-2-format checkpoints only"
        )
    c = {**GPT2_DEFAULTS, **{k: v for k, v in hf.items() if k in GPT2_DEFAULTS}}
    refusals = {
        "scale_attn_weights": (True, "unscaled attention scores"),
        "scale_attn_by_inverse_layer_idx": (False, "attention scaled by 1/layer"),
        "reorder_and_upcast_attn": (False, "reordered, upcast attention"),
        "add_cross_attention": (False, "cross-attention"),
    }
    for key, (supported, what) in refusals.items():
        if c[key] != supported:
            raise TinyLMError(f"{where}: {key}={c[key]} ({what}) is not supported by tinylm")
    if c["activation_function"] not in ACTIVATION_FROM_GPT2:
        raise TinyLMError(
            f"{where}: activation_function={c['activation_function']!r} is not supported; "
            f"tinylm has {', '.join(ACTIVATION_FROM_GPT2)}"
        )
    dropouts = {c["resid_pdrop"], c["embd_pdrop"], c["attn_pdrop"]}
    if len(dropouts) != 1:
        raise TinyLMError(
            f"{where}: resid_pdrop, embd_pdrop and attn_pdrop differ ({sorted(dropouts)}); "
            "tinylm has one dropout rate for all three"
        )
    return ModelConfig(
        vocab_size=c["vocab_size"],
        block_size=c["n_positions"],
        n_layer=c["n_layer"],
        n_head=c["n_head"],
        n_embd=c["n_embd"],
        dropout=float(dropouts.pop()),
        bias=True,
        tie_embeddings=bool(c["tie_word_embeddings"]),
        activation=ACTIVATION_FROM_GPT2[c["activation_function"]],
        mlp_hidden=0 if c["n_inner"] in (None, 4 * c["n_embd"]) else int(c["n_inner"]),
        norm_eps=float(c["layer_norm_epsilon"]),
    )


def gpt2_name(name: str) -> tuple[str, bool]:
    """GPT2LMHeadModel's name for a tinylm parameter, and whether its weight is transposed.

    blocks.0.attn.qkv.weight -> transformer.h.0.attn.c_attn.weight (transposed)
    wte.weight               -> transformer.wte.weight
    lm_head.weight           -> lm_head.weight
    """
    if name.startswith("lm_head."):
        return name, False
    if not name.startswith("blocks."):
        return "transformer." + name, False
    _, index, rest = name.split(".", 2)  # "blocks", "0", "attn.qkv.weight"
    module, _, param = rest.rpartition(".")
    if module in _BLOCK_LINEARS:
        return f"transformer.h.{index}.{_BLOCK_LINEARS[module]}.{param}", param == "weight"
    return f"transformer.h.{index}.{rest}", False


def to_gpt2_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under GPT-2 names and layouts (a tied output layer is left out)."""
    tied = model.config.tie_embeddings
    out = {}
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # transformers ties it to transformer.wte.weight on load
        hf_name, transpose = gpt2_name(name)
        out[hf_name] = (tensor.t() if transpose else tensor).detach().contiguous().clone()
    return out


def from_gpt2_state_dict(
    tensors: dict[str, torch.Tensor], model: torch.nn.Module, where: str
) -> dict[str, torch.Tensor]:
    """A tinylm state dict for `model` from GPT-2 tensors; refuses missing or extra weights.

    Accepts GPT2LMHeadModel names (transformer.h.0...) and GPT2Model names (h.0...).
    """
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    tensors = {k: v for k, v in tensors.items() if not k.endswith(_GPT2_BUFFERS)}
    tied = model.config.tie_embeddings
    out, used = {}, set()
    for name, expected in model.state_dict().items():
        hf_name, transpose = gpt2_name(name)
        hf_name = hf_name.removeprefix("transformer.")
        if tied and name == "lm_head.weight":
            hf_name, transpose = "wte.weight", False  # the same tensor
        if hf_name not in tensors:
            raise TinyLMError(f"{where}: weight {hf_name!r} is missing; not a GPT-2 checkpoint?")
        tensor = tensors[hf_name].t() if transpose else tensors[hf_name]
        if tensor.shape != expected.shape:
            raise TinyLMError(
                f"{where}: weight {hf_name!r} has shape {tuple(tensor.shape)}, but config.json "
                f"implies {tuple(expected.shape)}"
            )
        out[name] = tensor.contiguous()
        used.add(hf_name)
    if tied and "lm_head.weight" in tensors:  # some checkpoints store the tied copy too
        if not torch.equal(tensors["lm_head.weight"], tensors["wte.weight"]):
            raise TinyLMError(
                f"{where}: tie_word_embeddings is true but lm_head.weight differs from "
                "wte.weight; set tie_word_embeddings to false in config.json"
            )
        used.add("lm_head.weight")
    extra = sorted(set(tensors) - used)
    if extra:
        raise TinyLMError(
            f"{where}: weights tinylm has no place for: {', '.join(extra[:3])}"
            + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        )
    return out


class GPT2Family(Family):
    name = "gpt2"
    model_type = "gpt2"
    architecture = "GPT2LMHeadModel"
    config_class = "GPT2Config"
    description = "the GPT-2 architecture: learned positions, LayerNorm, GELU MLP"

    def refusal(self, model: ModelConfig) -> str | None:
        return refusal(model)

    def hf_config(self, model: ModelConfig, bos_id: int, eos_id: int) -> dict[str, Any]:
        return gpt2_config(model, bos_id, eos_id)

    def model_config(self, hf: dict[str, Any], where: str) -> ModelConfig:
        return model_config_from_gpt2(hf, where)

    def to_hf(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return to_gpt2_state_dict(model)

    def from_hf(
        self, tensors: dict[str, torch.Tensor], model: torch.nn.Module, where: str
    ) -> dict[str, torch.Tensor]:
        return from_gpt2_state_dict(tensors, model, where)

    def card_rows(self, model: ModelConfig) -> list[tuple[str, str]]:
        m = model
        return [
            ("architecture", f"GPT-2: n_layer {m.n_layer}, n_head {m.n_head}, n_embd {m.n_embd}"),
            ("MLP", f"{m.n_embd} → {m.hidden_size} → {m.n_embd}, "
             f"{ACTIVATION_NAMES[m.activation]} (`{ACTIVATION_TO_GPT2[m.activation]}`)"),
            ("positions", f"learned, {m.block_size} positions"),
            ("normalisation", f"LayerNorm (eps {m.norm_eps:g}) before attention and MLP"),
        ]  # fmt: skip

    gguf_arch = "gpt2"

    def gguf_hparams(self, model: ModelConfig) -> dict[str, int | float]:
        check_exportable(model)
        return {
            "context_length": model.block_size,
            "embedding_length": model.n_embd,
            "feed_forward_length": model.hidden_size,
            "block_count": model.n_layer,
            "attention.head_count": model.n_head,
            "attention.layer_norm_epsilon": float(model.norm_eps),
            "vocab_size": model.vocab_size,
        }

    def gguf_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """blocks.0.attn.qkv.weight -> blk.0.attn_qkv.weight (fused q|k|v rows, as llama.cpp's
        gpt2 graph splits them); wte.weight -> token_embd.weight."""
        out = {}
        for name, tensor in model.state_dict().items():
            if model.config.tie_embeddings and name == "lm_head.weight":
                continue
            module, _, param = name.rpartition(".")
            if module.startswith("blocks."):
                _, index, rest = module.split(".", 2)
                gguf = f"blk.{index}.{_GGUF_BLOCK[rest]}.{param}"
            else:
                gguf = f"{_GGUF_TOP[module]}.{param}"
            out[gguf] = tensor.detach()
        return out


ACTIVATION_NAMES = {"gelu": "exact (erf) GELU", "gelu_tanh": "tanh-approximated GELU"}

GPT2 = GPT2Family()
