"""A model family: one transformers architecture that expresses a set of tinylm models exactly.

Each family is one adapter object (gpt2.py: GPT2LMHeadModel; llama.py: LlamaForCausalLM
and Qwen3ForCausalLM) that knows

    refusal(model)        why a tinylm model config is not this family (None: it is)
    hf_config(model, ..)  the transformers config.json keys (and the class that writes them)
    model_config(hf, ..)  the way back: a tinylm ModelConfig, refusing what tinylm lacks
    to_hf / from_hf       the weight-name map (and any transpose or split) both ways
    card_rows(model)      the architecture facts of the model card
    gguf_arch, gguf_hparams(model), gguf_tensors(model)
                          llama.cpp's name for the architecture, its hyper-parameter keys
                          and its tensor names and layouts (for `--format gguf`, gguf.py)

Export picks the first family whose refusal is None; import picks the family by the
config.json `model_type`. Adding a family is one adapter here plus its entry in FAMILIES;
the export, import and model-card code stays as it is.
"""

from __future__ import annotations

from typing import Any

import torch

from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError


class Family:
    name: str
    """tinylm's name for the family ('gpt2', 'llama', 'qwen3')."""
    model_type: str
    """transformers' `model_type` in config.json."""
    architecture: str
    """The transformers class AutoModelForCausalLM builds, e.g. 'GPT2LMHeadModel'."""
    config_class: str
    """The transformers config class that writes config.json, e.g. 'GPT2Config'."""
    description: str
    """One phrase for the model card: what the architecture is."""

    def refusal(self, model: ModelConfig) -> str | None:
        raise NotImplementedError

    def hf_config(self, model: ModelConfig, bos_id: int, eos_id: int) -> dict[str, Any]:
        raise NotImplementedError

    def model_config(self, hf: dict[str, Any], where: str) -> ModelConfig:
        raise NotImplementedError

    def to_hf(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def from_hf(
        self, tensors: dict[str, torch.Tensor], model: torch.nn.Module, where: str
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def card_rows(self, model: ModelConfig) -> list[tuple[str, str]]:
        raise NotImplementedError

    gguf_arch: str
    """llama.cpp's architecture name (GGUF `general.architecture`): 'gpt2', 'llama', 'qwen3'."""

    def gguf_hparams(self, model: ModelConfig) -> dict[str, int | float]:
        """The GGUF hyper-parameter keys (without the `ARCH.` prefix): an int is written as
        uint32, a float as float32, the types llama.cpp reads them as."""
        raise NotImplementedError

    def gguf_tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The weights under llama.cpp's names, in the layouts its graph expects (torch's
        (out, in) order; GGUF lists dimensions the other way round). A tied output layer is
        left out: llama.cpp then reuses token_embd."""
        raise NotImplementedError


def families() -> tuple[Family, ...]:
    """Every family, in the order export tries them."""
    from tinylm.interop.gpt2 import GPT2
    from tinylm.interop.llama import LLAMA, QWEN3

    return (GPT2, LLAMA, QWEN3)


def export_family(model: ModelConfig, target: str = "Hugging Face format") -> Family:
    """The family that expresses `model` exactly; otherwise a one-line refusal that names
    the option no transformers class (or llama.cpp architecture) here can express."""
    refusals = {}
    for family in families():
        reason = family.refusal(model)
        if reason is None:
            return family
        refusals[family.name] = reason
    # The refusal of the family the model is closest to says what to change.
    nearest = "gpt2" if model.positions == "learned" else "qwen3" if model.qk_norm else "llama"
    raise TinyLMError(f"cannot export to {target}: {refusals[nearest]}")


def import_family(hf: dict[str, Any], where: str) -> Family:
    """The family of a transformers config.json, by its model_type."""
    by_type = {f.model_type: f for f in families()}
    kind = hf.get("model_type")
    if kind not in by_type:
        raise TinyLMError(
            f"{where}: model_type {kind!r} is not supported; tinylm imports "
            f"{', '.join(sorted(by_type))} checkpoints"
        )
    return by_type[kind]


def check_shape(where: str, hf_name: str, tensor: torch.Tensor, shape: torch.Size) -> None:
    if tensor.shape != shape:
        raise TinyLMError(
            f"{where}: weight {hf_name!r} has shape {tuple(tensor.shape)}, but config.json "
            f"implies {tuple(shape)}"
        )


def refuse_extra(where: str, tensors: dict[str, torch.Tensor], used: set[str]) -> None:
    extra = sorted(set(tensors) - used)
    if extra:
        raise TinyLMError(
            f"{where}: weights tinylm has no place for: {', '.join(extra[:3])}"
            + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        )
