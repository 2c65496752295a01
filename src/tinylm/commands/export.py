"""`tinylm export RUN OUT [--format hf|pt2]`: a model for other tools, logits checked."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a model for other tools (transformers, torch.export)",
        description="Export a run's latest checkpoint (or a checkpoint directory). --format hf "
        "writes a transformers directory of the model's family (GPT2LMHeadModel, "
        "LlamaForCausalLM, or Qwen3ForCausalLM with QK-norm; config.json, model.safetensors, "
        "tokenizer, generation_config.json, README.md model card) that AutoModelForCausalLM "
        "and AutoTokenizer load without tinylm. --format pt2 writes a torch.export program "
        "(model.pt2) that runs with torch alone. Each export is checked against tinylm's logits; "
        "a model no family expresses is refused.",
    )
    p.add_argument("run", type=Path, help="run directory (or checkpoint directory)")
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--format", choices=("hf", "pt2"), default="hf", help="(default: hf)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.format == "pt2":
        from tinylm.interop.pt2 import export_pt2

        result = export_pt2(args.run, args.out, overwrite=args.overwrite)
        print(
            f"wrote {result.out}/ (model.pt2, {result.num_parameters:,} parameters) | "
            f"max logit difference vs tinylm {result.max_logit_diff:.2e}"
        )
        return 0
    from tinylm.interop.hf import export_hf

    result = export_hf(args.run, args.out, overwrite=args.overwrite)
    print(
        f"wrote {result.out}/ ({result.family.architecture}, {result.num_parameters:,} parameters, "
        f"{result.tokenizer} tokenizer, README.md) | max logit difference vs tinylm "
        f"{result.max_logit_diff:.2e} (fp32)"
    )
    return 0
