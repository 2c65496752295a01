"""`tinylm export --format hf` and `tinylm import`: transformers model directories.

    OUT/config.json               the family's config: GPT2Config (GPT2LMHeadModel),
                                  LlamaConfig (LlamaForCausalLM) or Qwen3Config (Qwen3ForCausalLM)
    OUT/model.safetensors         the weights under the family's names (gpt2.py, llama.py)
    OUT/tokenizer.json            the tokenizer (see tokenizer.py) ...
    OUT/tokenizer_config.json     ... and its settings, for AutoTokenizer
    OUT/generation_config.json    end-of-text token; tinylm's default sampling settings
    OUT/README.md                 the model card (see model_card.py)

An export is checked before it is put in place: the written directory is loaded back
with AutoModelForCausalLM and its logits on random tokens must equal tinylm's. It is
built in a temporary directory and renamed into place, so a failed export leaves no
directory that looks complete. Import needs no transformers: config.json and the
safetensors (or weights-only torch) files are read directly.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from tinylm.atomic import built_dir
from tinylm.config import Config
from tinylm.confine import confined
from tinylm.data.dataset import model_tokenizer
from tinylm.data.tokenizer import get_tokenizer
from tinylm.errors import TinyLMError
from tinylm.inference import load_for_inference
from tinylm.interop.family import Family, export_family, import_family
from tinylm.interop.model_card import write_model_card
from tinylm.interop.tokenizer import TOKENIZER_JSON, export_tokenizer, tokenizer_of_hf_dir
from tinylm.model import GPT
from tinylm.training.checkpoint import Checkpoint, save_checkpoint

PARITY_TOLERANCE = 1e-4
"""Largest logit difference (fp32) an export may show; measured ones are ~1e-6."""

SAMPLING = {"do_sample": True, "temperature": 0.8, "top_k": 50, "top_p": 0.95}
"""`tinylm generate`'s defaults, written to generation_config.json."""


@dataclass
class ExportResult:
    out: Path
    num_parameters: int
    max_logit_diff: float
    """Largest |tinylm logit - transformers logit| on the parity check's random tokens."""
    tokenizer: str
    family: Family
    """The family adapter that wrote it (family.architecture: the transformers class)."""


def require_transformers(what: str) -> Any:
    try:
        import transformers
    except ImportError:
        raise TinyLMError(
            f"{what} needs transformers: pip install 'tinylm[hf]' (or transformers==5.24.0)"
        ) from None
    return transformers


def export_hf(source: str | Path, out: str | Path, overwrite: bool = False) -> ExportResult:
    """Write the checkpoint (or a run's latest) as a transformers model directory of the
    model's family (GPT2LMHeadModel, LlamaForCausalLM or Qwen3ForCausalLM)."""
    transformers = require_transformers("exporting to Hugging Face format")
    out = Path(out)
    ckpt = load_for_inference(source, device="cpu", precision="fp32").checkpoint
    family = export_family(ckpt.config.model)  # refuses what no family expresses
    check_output_dir(out, overwrite, source)
    model = ckpt.model  # fp32, in eval mode: as load_for_inference leaves it
    dataset = Path(ckpt.config.data.path)
    with built_dir(out) as tmp:
        tok = export_tokenizer(
            ckpt.meta["tokenizer"]["name"],
            dataset if dataset.is_dir() else None,
            tmp,
            ckpt.config.model.block_size,
        )
        if dataset.is_dir():  # refuse a dataset re-prepared with another tokenizer since
            model_tokenizer(ckpt.meta["tokenizer"], dataset)  # training
        config = family.hf_config(ckpt.config.model, bos_id=tok.eos_id, eos_id=tok.eos_id)
        getattr(transformers, family.config_class)(**config).save_pretrained(tmp)
        safetensors.torch.save_file(
            family.to_hf(model), str(tmp / "model.safetensors"), metadata={"format": "pt"}
        )
        transformers.GenerationConfig(
            bos_token_id=tok.eos_id, eos_token_id=tok.eos_id, pad_token_id=tok.eos_id, **SAMPLING
        ).save_pretrained(tmp)
        hf_model = load_hf_model(tmp)
        diff = max_logit_difference(model, hf_model, random_tokens(ckpt.config.model))
        if not diff <= PARITY_TOLERANCE:  # a conversion bug: ours to fix, not the user's
            raise RuntimeError(f"exported logits differ from tinylm's by {diff:.3g}")
        write_model_card(ckpt, tmp / "README.md", tok.kind, diff, family)
    return ExportResult(out, model.num_parameters(), diff, tok.kind, family)


def load_hf_model(path: Path) -> torch.nn.Module:
    """The exported directory as transformers loads it (fp32, eval mode)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # a bar for loading a handful of tensors is noise here
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    finally:
        if shown:
            logging.enable_progress_bar()


def random_tokens(config: Any, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A full block of uniformly random token ids per row: (batch, block_size) int64."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(config.vocab_size, (batch, config.block_size), generator=generator)


@torch.no_grad()
def check_logits(model: GPT, other: Any, what: str) -> float:
    """max |tinylm logits - other(idx)| on a full block of random tokens (2 rows) and on a
    third of one (1 row): an export's runtime must agree at more than one shape. Above
    PARITY_TOLERANCE it is a conversion bug, ours to fix (RuntimeError)."""
    config, diff = model.config, 0.0
    short = random_tokens(config, batch=1, seed=1)[:, : config.block_size // 3]
    for idx in (random_tokens(config), short):
        diff = max(diff, (other(idx).float() - model(idx).float()).abs().max().item())
    if not diff <= PARITY_TOLERANCE:
        raise RuntimeError(f"{what} logits differ from tinylm's by {diff:.3g}")
    return diff


@torch.no_grad()
def max_logit_difference(model: GPT, hf_model: torch.nn.Module, idx: torch.Tensor) -> float:
    """max |tinylm logits - transformers logits| over every position and token of idx (B, T)."""
    model.eval()
    ours = model(idx)  # (B, T, V)
    theirs = hf_model(idx).logits  # (B, T, V)
    return (ours.float() - theirs.float()).abs().max().item()


def import_hf(
    hf_dir: str | Path, out: str | Path, tokenizer: str | None = None, overwrite: bool = False
) -> Checkpoint:
    """Load a local transformers checkpoint of a supported family (GPT-2, Llama, Qwen3)
    and save it as a tinylm checkpoint."""
    hf_dir, out = Path(hf_dir), Path(out)
    config_file = hf_dir / "config.json"
    if not config_file.is_file():
        what = "no such directory" if not hf_dir.exists() else "no config.json"
        raise TinyLMError(f"{hf_dir}: {what}; expected a transformers model directory")
    try:
        hf_config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TinyLMError(f"{config_file}: not valid JSON ({err})") from None
    if not isinstance(hf_config, dict):
        raise TinyLMError(f"{config_file}: expected a JSON object of settings")
    try:
        family = import_family(hf_config, str(config_file))
        config = Config(model=family.model_config(hf_config, str(config_file)))
    except (TypeError, ValueError) as err:  # "768" where a number belongs, say
        raise TinyLMError(f"{config_file}: a setting has the wrong type ({err})") from None
    try:
        config.validate()  # every field's type and range, before anything is allocated
    except TinyLMError as err:
        raise TinyLMError(f"{config_file}: {err}") from None
    name = tokenizer or tokenizer_of_hf_dir(hf_dir)
    if name is None:
        raise TinyLMError(
            f"{hf_dir}: its tokenizer files are missing or not GPT-2's; if the model uses the "
            "GPT-2 vocabulary, say so with --tokenizer gpt2"
        )
    tok = get_tokenizer(name)
    if config.model.vocab_size < tok.vocab_size:
        raise TinyLMError(
            f"{config_file}: vocab_size {config.model.vocab_size} is smaller than the "
            f"{name} tokenizer's {tok.vocab_size}"
        )
    check_output_dir(out, overwrite, hf_dir)
    weights = read_weights(hf_dir)  # no larger than the files on disk
    check_size(config, weights, config_file)
    model = GPT(config.model)
    model.load_state_dict(family.from_hf(weights, model, str(hf_dir)))
    meta = {
        "step": 0,
        "tokens_seen": 0,
        "imported_from": str(hf_dir.resolve()),
        "tokenizer": {"name": tok.name, "fingerprint": tok.fingerprint},
        "num_parameters": model.num_parameters(),
    }
    save_checkpoint(out, model, config, meta)
    return Checkpoint(out, model, config, meta)


def read_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers directory: model.safetensors, its shards, or a .bin."""
    single, index = hf_dir / "model.safetensors", hf_dir / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TinyLMError(f"{index}: damaged (expected a JSON weight_map)") from None
        files = [confined(hf_dir, name, str(index)) for name in names]
    elif (hf_dir / "pytorch_model.bin").is_file():
        return _load_pickled_tensors(hf_dir / "pytorch_model.bin")
    else:
        raise TinyLMError(f"{hf_dir}: no model.safetensors (or pytorch_model.bin) to import")
    tensors = {}
    for file in files:
        try:
            tensors.update(safetensors.torch.load_file(str(file)))
        except (safetensors.SafetensorError, OSError) as err:
            raise TinyLMError(f"{file}: damaged or unreadable weights ({err})") from None
    return tensors


def _load_pickled_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A pytorch_model.bin with weights_only=True: a file that would run code (a pickled
    GLOBAL such as os.system) is refused in one line, never loaded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes are not the user's problem
            tensors = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refusing something
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise TinyLMError(
            f"{file}: refused: it holds Python objects to call{what}, not only tensors; "
            "import a model.safetensors instead"
        ) from None
    except Exception as err:  # torch raises several types for damaged files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TinyLMError(f"{file}: unreadable ({first})") from None
    if not isinstance(tensors, dict) or not all(torch.is_tensor(t) for t in tensors.values()):
        raise TinyLMError(f"{file}: not a state dict of tensors")
    return tensors


def check_size(config: Config, weights: dict[str, torch.Tensor], config_file: Path) -> None:
    """Refuse a config that describes a far larger model than its weight files hold (a
    typo of n_embd, n_layer or n_positions) before the model is allocated: counted on
    the meta device, which allocates nothing."""
    with torch.device("meta"):
        wanted = GPT(config.model).num_parameters()
    held = sum(t.numel() for t in weights.values())
    # Slack: a tied output layer stored twice, or buffers stored as weights.
    if wanted > 2 * held + 1_000_000:
        raise TinyLMError(
            f"{config_file}: describes a model of {wanted:,} parameters but its weights hold "
            f"{held:,} values; the config does not match its weight files"
        )


# A directory `--overwrite` may replace holds one of these: an earlier hf export
# (config.json), pt2, gguf or onnx export, or an imported checkpoint (meta.json).
OUTPUT_MARKS = ("config.json", "model.pt2", "model.gguf", "model.onnx", "meta.json")


def check_output_dir(out: Path, overwrite: bool, source: str | Path | None = None) -> None:
    """Refuse an output that is a file, or a non-empty directory without --overwrite; with
    it, refuse to replace anything but an earlier export or import (never a run, a dataset,
    the source itself or a directory of it)."""
    if out.exists() and not out.is_dir():
        raise TinyLMError(f"{out}: exists and is not a directory")
    if not (out.is_dir() and any(out.iterdir())):
        return
    if not overwrite:
        raise TinyLMError(f"{out}: already exists; pass --overwrite to replace it")
    if source is not None:
        here, there = out.resolve(), Path(source).resolve()
        if here == there or here in there.parents or there in here.parents:
            raise TinyLMError(f"{out}: is what is being exported or imported; choose another out")
    if (out / "manifest.json").exists():
        why = "is a prepared dataset"
    elif (out / "config.yaml").exists() and (out / "checkpoints").exists():
        why = "is a tinylm run"
    elif not any((out / mark).exists() for mark in OUTPUT_MARKS):
        why = "does not look like an earlier export"
    else:
        return
    raise TinyLMError(f"{out}: {why}; --overwrite only replaces an earlier output, choose another")


__all__ = ["TOKENIZER_JSON", "ExportResult", "export_hf", "import_hf"]
