"""`tinylm export --format pt2`: the model as a torch.export program, for inference elsewhere.

    OUT/model.pt2     torch.export.save of GPT.forward: idx (B, T) int64 -> logits (B, T, V),
                      with B and T dynamic (1 <= T <= block_size)
    OUT/model.json    what a caller needs beside it: model config, tokenizer name, eot id

Load it with torch alone (no tinylm): `torch.export.load("OUT/model.pt2").module()(idx)`.
Like the Hugging Face export, it is checked before it is put in place: the saved file is
loaded back and its logits must equal tinylm's on random inputs of two shapes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tinylm.atomic import built_dir
from tinylm.data.tokenizer import get_tokenizer, is_named
from tinylm.inference import load_for_inference
from tinylm.interop.hf import check_logits, check_output_dir, random_tokens
from tinylm.interop.tokenizer import manifest_eot_id


@dataclass
class Pt2Result:
    out: Path
    num_parameters: int
    max_logit_diff: float


def export_pt2(source: str | Path, out: str | Path, overwrite: bool = False) -> Pt2Result:
    out = Path(out)
    ckpt = load_for_inference(source, device="cpu", precision="fp32").checkpoint
    check_output_dir(out, overwrite, source)
    model, config = ckpt.model, ckpt.config.model  # fp32, eval mode (load_for_inference)
    example = random_tokens(config)  # (2, block_size)
    dynamic = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("T", max=config.block_size)},)
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
    with built_dir(out) as tmp:
        torch.export.save(program, tmp / "model.pt2")
        tokenizer = ckpt.meta["tokenizer"]["name"]
        info = {
            "model": asdict(config),
            "tokenizer": tokenizer,
            "eot_id": _eot_id(tokenizer, Path(ckpt.config.data.path)),
            "input": "idx: int64 (batch, T), 1 <= T <= block_size",
            "output": "logits: float32 (batch, T, vocab_size)",
        }
        (tmp / "model.json").write_text(json.dumps(info, indent=2) + "\n")
        loaded = torch.export.load(tmp / "model.pt2").module()
        diff = check_logits(model, loaded, "exported program's")
    return Pt2Result(out, model.num_parameters(), diff)


def _eot_id(tokenizer: str, dataset: Path) -> int | None:
    """The end-of-text id: from the dataset's manifest, else the named tokenizer's."""
    eot = manifest_eot_id(dataset)
    if eot is not None:
        return eot
    return get_tokenizer(tokenizer).eot_id if is_named(tokenizer) else None
