"""`tinylm import HF_DIR --out CKPT`: a GPT-2, Llama or Qwen3 transformers directory ->
checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="turn a GPT-2, Llama or Qwen3 transformers checkpoint into a tinylm checkpoint",
        description="Read a local transformers GPT-2, Llama or Qwen3 directory (config.json, "
        "model.safetensors "
        "or pytorch_model.bin, tokenizer files) and write a tinylm checkpoint directory that "
        "`tinylm eval`, `tinylm generate` and `tinylm export` accept. Options tinylm cannot "
        "express are refused.",
    )
    p.add_argument("hf_dir", type=Path, help="transformers model directory")
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    p.add_argument(
        "--tokenizer",
        help="tinylm tokenizer of the model (default: detected from the tokenizer files)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tinylm.interop.hf import import_hf

    ckpt = import_hf(args.hf_dir, args.out, tokenizer=args.tokenizer, overwrite=args.overwrite)
    m = ckpt.config.model
    print(
        f"wrote {ckpt.path}/ ({ckpt.meta['num_parameters']:,} parameters: n_layer {m.n_layer}, "
        f"n_head {m.n_head}, n_embd {m.n_embd}, block {m.block_size}, {m.activation}, "
        f"{ckpt.meta['tokenizer']['name']} tokenizer)"
    )
    return 0
