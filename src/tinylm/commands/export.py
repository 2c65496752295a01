"""`tinylm export RUN OUT [--format hf|pt2|gguf|onnx]`: a model for other tools, checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinylm.config import EXPORT_FORMATS, GGUF_TYPES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a model for other tools (transformers, torch.export, llama.cpp, onnxruntime)",
        description="Export a run's latest checkpoint (or a checkpoint directory). --format hf "
        "writes a transformers directory of the model's family (GPT2LMHeadModel, "
        "LlamaForCausalLM, or Qwen3ForCausalLM with QK-norm; config.json, model.safetensors, "
        "tokenizer, generation_config.json, README.md model card) that AutoModelForCausalLM "
        "and AutoTokenizer load without tinylm. --format pt2 writes a torch.export program "
        "(model.pt2) that runs with torch alone. --format gguf writes model.gguf (llama.cpp's "
        "gpt2, llama or qwen3 architecture, weights as --type, tokenizer included) and an "
        "Ollama Modelfile. --format onnx writes model.onnx (dynamic batch and length) and "
        "tokenizer.json for onnxruntime. Each export is checked (logits against tinylm's, or "
        "for gguf every key and tensor read back); a model no family expresses is refused. "
        "See docs/interop.md.",
    )
    p.add_argument("run", type=Path, help="run directory (or checkpoint directory)")
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="hf", help="(default: hf)")
    p.add_argument(
        "--type",
        choices=GGUF_TYPES,
        default=None,
        help="gguf only: weight type; f32 is exact, f16 and q8_0 are smaller (default: f32)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tinylm.errors import TinyLMError

    if args.type is not None and args.format != "gguf":
        raise TinyLMError(f"--type applies to --format gguf only (not {args.format}); drop it")
    if args.format == "pt2":
        from tinylm.interop.pt2 import export_pt2

        result = export_pt2(args.run, args.out, overwrite=args.overwrite)
        print(
            f"wrote {result.out}/ (model.pt2, {result.num_parameters:,} parameters) | "
            f"max logit difference vs tinylm {result.max_logit_diff:.2e}"
        )
        return 0
    if args.format == "gguf":
        from tinylm.interop.gguf import export_gguf

        g = export_gguf(args.run, args.out, args.type or "f32", overwrite=args.overwrite)
        print(
            f"wrote {g.out}/ (model.gguf: llama.cpp {g.family.gguf_arch}, {g.weight_type}, "
            f"{g.file_bytes / 2**20:.1f} MiB, {g.num_parameters:,} parameters, {g.tokenizer} "
            f"tokenizer; Modelfile for Ollama) | every key and tensor read back, max weight "
            f"error {g.max_weight_error:.1e}"
        )
        return 0
    if args.format == "onnx":
        from tinylm.interop.onnx import export_onnx

        o = export_onnx(args.run, args.out, overwrite=args.overwrite)
        print(
            f"wrote {o.out}/ (model.onnx, {o.num_parameters:,} parameters, tokenizer.json) | "
            f"max logit difference vs tinylm in onnxruntime {o.max_logit_diff:.2e} (fp32)"
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
