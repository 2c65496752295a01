"""The `tinylm` command: one entry point, one subcommand per pipeline stage.

    tinylm prepare SOURCE... --out DATA      text -> token shards + manifest
    tinylm tokenizer train SOURCE... --vocab-size N --out DIR
    tinylm data stats DATA                    documents, tokens, top tokens, lengths
    tinylm train [CONFIG.yaml] [k=v...] --out RUN [--resume]
    tinylm eval RUN [--split val test]        loss, perplexity, bits per byte
    tinylm generate RUN --prompt TEXT...      sample text (KV cache, batch, streaming)
    tinylm report RUN... [--out FILE.md]      results table (Markdown, CSV, loss plots)
    tinylm sweep SWEEP.yaml [--scale S]       many runs from one file, resumable, + report
    tinylm plot RUN... [--out PNG]            train/val loss curves of one or many runs
    tinylm export RUN --format hf OUT         transformers model directory (or pt2)
    tinylm import HF_DIR --out CKPT           GPT-2-format transformers dir -> checkpoint

Errors a user can cause print one line and exit 2; heavy imports (torch) happen only
inside the subcommand that needs them, so --help is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from tinylm import __version__
from tinylm.errors import TinyLMError, is_out_of_memory
from tinylm.rundir import RunDir

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `section.key=value` settings may also follow options (`--scale cpu train.seed=1`).
    late = getattr(args, "settings_attr", None)
    if extra and late and all("=" in e and not e.startswith("-") for e in extra):
        setattr(args, late, getattr(args, late) + extra)
    elif extra:
        parser.parse_args(argv)  # argparse's own message and exit 2
    try:
        return args.func(args) or 0
    except TinyLMError as err:
        return _fail(args.command, str(err))
    except OSError as err:  # disk full, read-only or missing output folder, ...
        return _fail(args.command, f"{err.filename or ''}: {err.strerror or err}".lstrip(": "))
    except RuntimeError as err:
        if not is_out_of_memory(err):
            raise
        return _fail(
            args.command,
            "out of memory; use a smaller batch (--batch-size, train.batch_size) or model",
        )
    except KeyboardInterrupt:
        print(f"tinylm {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _fail(command: str, message: str) -> int:
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank meets it; one says it
        print(f"tinylm {command}: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinylm",
        description="Train small GPT-style language models from scratch: "
        "prepare data, train, evaluate, generate, report.",
        epilog="Quick start: make demo. Each subcommand has its own --help.",
    )
    parser.add_argument("--version", action="version", version=f"tinylm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "prepare",
        help="clean, dedup, split and tokenize sources into token shards",
        description="Read documents from files, directories, globs, JSON/JSONL, Parquet (also "
        ".gz/.zst), HF datasets or built-in corpora; clean them, drop exact duplicates, split "
        "them by document into train/val/test (seeded hash of each document), tokenize in "
        "parallel, and write token shards plus DIR/manifest.json. See docs/data.md.",
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a file (.txt .md .jsonl .json .parquet, optionally .gz/.zst), a directory, a "
        "glob, hf:NAME_OR_PATH, or builtin:wiki / sotu / shakespeare / bible / mix",
    )
    p.add_argument("--out", required=True, type=Path, help="output dataset directory")
    p.add_argument(
        "--tokenizer",
        default="gpt2",
        help="gpt2, bytes, or a tokenizer.json from `tinylm tokenizer train` (default: gpt2)",
    )
    p.add_argument("--split", default="98,1,1", help="train,val,test shares (default: 98,1,1)")
    p.add_argument("--seed", type=int, default=1337, help="seed of the split (default: 1337)")
    p.add_argument("--weights", help="mixture weight per source, e.g. 1,0.5 (default: all 1)")
    _add_source_args(p)
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="tokenizer processes; 0 = one per core, 1 = in this process (default: 0)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "tokenizer",
        help="train a byte-level BPE tokenizer on a corpus",
        description="`tinylm tokenizer train SOURCE... --vocab-size N --out DIR` trains a "
        "byte-level BPE (HF tokenizers) on the documents that land in the train split, and "
        "writes DIR/tokenizer.json; pass it to `tinylm prepare --tokenizer`.",
    )
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = tsub.add_parser("train", help="train a BPE on the train split of the sources")
    t.add_argument("sources", nargs="+", metavar="SOURCE", help="as for `tinylm prepare`")
    t.add_argument("--out", required=True, type=Path, help="directory for tokenizer.json")
    t.add_argument("--vocab-size", type=int, required=True, help="tokens, EOT included")
    t.add_argument("--min-frequency", type=int, default=2, help="rarest merge kept (default: 2)")
    t.add_argument("--split", default="98,1,1", help="as for prepare: only train documents")
    t.add_argument("--seed", type=int, default=1337, help="as for prepare (default: 1337)")
    _add_source_args(t)
    t.set_defaults(func=cmd_tokenizer_train)

    p = sub.add_parser(
        "data",
        help="describe a prepared dataset",
        description="`tinylm data stats DIR`: per split documents, tokens, bytes per token, "
        "the most frequent tokens and a histogram of document lengths.",
    )
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    d = dsub.add_parser("stats", help="statistics of a prepared dataset")
    d.add_argument("dataset", type=Path, help="dataset directory")
    d.add_argument("--top", type=int, default=10, help="most frequent tokens to list")
    d.set_defaults(func=cmd_data_stats)

    p = sub.add_parser(
        "train",
        help="train a model from a config",
        description="Train a GPT on a prepared dataset. Settings come from an optional YAML "
        "config (configs/*.yaml) and dotted overrides such as optim.lr=5e-4 or model=seed-d256. "
        "Writes config.yaml, metrics.jsonl, tensorboard/, checkpoints/ and loss.png into --out. "
        "Running the same command again on an interrupted run continues it from its latest "
        "checkpoint.",
    )
    p.add_argument(
        "settings",
        nargs="*",
        metavar="CONFIG|KEY=VALUE",
        help="a YAML config file and/or overrides, e.g. configs/seed_exp1.yaml optim.lr=5e-4",
    )
    p.add_argument("--out", required=True, type=Path, help="run directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its latest checkpoint; its config.yaml is the "
        "base the given config/overrides change (e.g. a larger train.max_steps)",
    )
    p.set_defaults(func=cmd_train, settings_attr="settings")

    p = sub.add_parser(
        "eval",
        help="loss, perplexity and bits per byte on held-out splits",
        description="Evaluate a run's latest checkpoint on whole splits of its dataset. Prints "
        "a table and records the results in RUN/eval.json.",
    )
    _add_checkpoint_args(p)
    p.add_argument("--split", nargs="+", default=["val", "test"], help="splits (default: val test)")
    p.add_argument("--data", type=Path, help="dataset directory (default: the one it trained on)")
    p.add_argument(
        "--batch-size", type=int, default=32, help="blocks per forward pass (default: 32)"
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "generate",
        help="sample text from a trained model",
        description="Continue one or more prompts with the run's latest checkpoint, all in "
        "one batch with a KV cache. A single sample streams to the terminal as it is "
        "generated; samples are also appended to RUN/samples.txt.",
    )
    _add_checkpoint_args(p)
    p.add_argument(
        "--prompt",
        action="append",
        help="text to continue; repeat for a batch of prompts (default: start of a document)",
    )
    p.add_argument(
        "--prompts-file", type=Path, help="a text file with one prompt per line (adds to --prompt)"
    )
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="also stop a sample at this text (must be one token, e.g. a newline); "
        "<|endoftext|> always stops",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="weights' precision while generating; auto: fp32 on a CPU (faster than bf16 at "
        "batch 1 there; bf16 wins from batch 8), as for training on a GPU (default: auto)",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="recompute the whole context every token (slow)"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=100, help="tokens to generate (default: 100)"
    )
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: 0.8)")
    p.add_argument(
        "--top-k", type=int, default=50, help="keep the k likeliest tokens; 0 = all (default: 50)"
    )
    p.add_argument(
        "--top-p", type=float, default=0.95, help="nucleus sampling mass; 1 = off (default: 0.95)"
    )
    p.add_argument("--num-samples", type=int, default=1, help="samples to draw (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "report",
        help="summarise one or more runs as a Markdown table (and CSV, plots)",
        description="Read run directories (config, metrics, checkpoint, eval.json, samples) "
        "and print a Markdown results table; a sweep's output directory stands for its runs. "
        "With one run it is also saved as RUN/report.md. "
        "--out FILE.md writes the report there with FILE.csv (raw numbers) and two PNGs "
        "beside it: train/val loss against tokens seen and against wall time.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run directories")
    p.add_argument(
        "--out", type=Path, help="write FILE.md, FILE.csv and FILE-loss-vs-{tokens,time}.png"
    )
    p.add_argument("--title", default="tinylm results", help="the report's heading")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "sweep",
        help="run every configuration of a sweep file (resumable), then report",
        description="Expand a sweep YAML (a base config with a grid and/or list of overrides, "
        "optional named scales) into runs OUT/NAME, named after what differs. Each run is "
        "`tinylm train` then `tinylm eval` in its own process: finished runs are skipped, "
        "interrupted ones resumed. Ends with OUT/report.md, report.csv and loss plots. "
        "Format: docs/experiments.md.",
    )
    p.add_argument("sweep", type=Path, help="sweep YAML file")
    p.add_argument("overrides", nargs="*", help="section.key=value for every run")
    p.add_argument("--scale", help="one of the file's named scales (e.g. cpu)")
    p.add_argument("--out", type=Path, help="directory of the runs (default: the file's out)")
    p.add_argument(
        "--jobs", type=int, default=1, help="runs at once, as separate processes (default: 1)"
    )
    p.add_argument(
        "--only",
        type=lambda text: [name for name in text.split(",") if name],
        metavar="NAME[,NAME...]",
        help="run only these runs (comma-separated names)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs, their state and commands")
    p.set_defaults(func=cmd_sweep, settings_attr="overrides")

    p = sub.add_parser(
        "plot",
        help="draw train/val loss curves of runs into a PNG",
        description="Plot training loss (raw and smoothed) and validation loss against tokens "
        "seen for one or more run directories, one colour per run.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run directories")
    p.add_argument(
        "--out", type=Path, default=Path("loss.png"), help="PNG file (default: loss.png)"
    )
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "export",
        help="write a model for other tools (transformers, torch.export)",
        description="Export a run's latest checkpoint (or a checkpoint directory). --format hf "
        "writes a transformers GPT2LMHeadModel directory (config.json, model.safetensors, "
        "tokenizer, generation_config.json, README.md model card) that AutoModelForCausalLM "
        "and AutoTokenizer load without tinylm. --format pt2 writes a torch.export program "
        "(model.pt2) that runs with torch alone. Each export is checked against tinylm's logits.",
    )
    p.add_argument("run", type=Path, help="run directory (or checkpoint directory)")
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--format", choices=("hf", "pt2"), default="hf", help="(default: hf)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import",
        help="turn a GPT-2-format transformers checkpoint into a tinylm checkpoint",
        description="Read a local transformers GPT-2 directory (config.json, model.safetensors "
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
    p.set_defaults(func=cmd_import)
    return parser


def _add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run directory (or checkpoint directory)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--text-field",
        default="text",
        help="JSON/JSONL/Parquet/HF field holding the text (default: text)",
    )
    p.add_argument("--hf-split", default="train", help="split of hf: sources (default: train)")
    p.add_argument(
        "--on-invalid-utf8",
        choices=("error", "skip", "replace"),
        default="error",
        help="a document that is not UTF-8: stop with an error (default), skip it (counted), "
        "or replace bad bytes",
    )
    p.add_argument(
        "--normalize",
        choices=("NFC", "NFKC", "none"),
        default="NFC",
        help="Unicode normalization (default: NFC)",
    )
    p.add_argument(
        "--keep-control", action="store_true", help="keep control characters (NUL is always cut)"
    )
    p.add_argument(
        "--keep-whitespace", action="store_true", help="keep whitespace exactly as it is"
    )
    p.add_argument("--min-chars", type=int, default=1, help="drop shorter documents (default: 1)")
    p.add_argument("--no-dedup", action="store_true", help="keep exact duplicate documents")


def _source_options(args: argparse.Namespace):
    from tinylm.data.clean import CleanOptions
    from tinylm.data.prepare import parse_split
    from tinylm.data.sources import SourceOptions

    if args.min_chars < 0:
        raise TinyLMError("--min-chars must not be negative")
    source = SourceOptions(args.text_field, args.on_invalid_utf8, args.hf_split)
    clean = CleanOptions(
        normalize=args.normalize,
        strip_control=not args.keep_control,
        normalize_whitespace=not args.keep_whitespace,
        min_chars=args.min_chars,
        dedup=not args.no_dedup,
    )
    return source, clean, parse_split(args.split)


def cmd_prepare(args: argparse.Namespace) -> int:
    from tinylm.data.prepare import PrepareOptions, prepare

    if args.workers < 0:
        raise TinyLMError("--workers must be 0 (one per core) or a positive number")
    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise TinyLMError(f"--weights {args.weights!r}: expected numbers, e.g. 1,0.5") from None
    source, clean, split = _source_options(args)
    opts = PrepareOptions(
        sources=args.sources,
        out=args.out,
        tokenizer=args.tokenizer,
        split=split,
        seed=args.seed,
        source_options=source,
        clean=clean,
        weights=weights,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    manifest = prepare(opts)
    for name, info in manifest["splits"].items():
        print(
            f"{name:>5}: {info['documents']:>9,} documents {info['tokens']:>13,} tokens "
            f"in {len(info['shards'])} shard(s)"
        )
    for s in manifest["sources"]:
        skipped = {k: v for k, v in s.items() if k in ("duplicates", "too_short", "invalid_utf8")}
        if any(skipped.values()):
            print(f"{s['spec']}: skipped " + ", ".join(f"{v:,} {k}" for k, v in skipped.items()))
    print(f"wrote {args.out}/ ({manifest['tokenizer']['name']}, {manifest['dtype']})")
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from tinylm.data.stats import training_texts
    from tinylm.data.tokenizer import get_tokenizer, train_bpe

    source, clean, split = _source_options(args)
    texts = training_texts(args.sources, source, clean, split, args.seed)
    file = train_bpe(texts, args.vocab_size, args.out, args.min_frequency)
    tok = get_tokenizer(str(file))
    print(f"wrote {file} ({tok.name}, fingerprint {tok.fingerprint[:12]})")
    print(f"next: tinylm prepare {' '.join(args.sources)} --tokenizer {file} --out DATA")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from tinylm.data.dataset import PreparedDataset
    from tinylm.data.stats import dataset_stats, format_stats

    if args.top < 0:
        raise TinyLMError("--top must not be negative")
    dataset = PreparedDataset.open(args.dataset)
    print(format_stats(dataset, dataset_stats(dataset, args.top)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tinylm.config import load_config

    config_files = [s for s in args.settings if "=" not in s]
    overrides = [s for s in args.settings if "=" in s]
    if len(config_files) > 1:
        raise TinyLMError(f"one config file at most, got {', '.join(config_files)}")
    base = config_files[0] if config_files else None
    if args.resume and base is None:  # the run's own config, changed by the overrides
        base = args.out / "config.yaml"
        if not base.is_file():
            raise TinyLMError(f"{args.out}: nothing to resume (no config.yaml there)")
    config = load_config(base, overrides)

    from tinylm.rundir import RECENT_STEPS
    from tinylm.training.trainer import train

    result = train(config, args.out, overwrite=args.overwrite, resume=args.resume)
    from tinylm.distributed import is_main

    if not is_main():  # under torchrun rank 0 reports for the run
        return 128 + result.signal if result.interrupted else 0
    rate = result.tokens / result.train_seconds if result.train_seconds else 0.0
    line = (
        f"trained {result.steps:,} steps, {result.tokens:,} tokens in {result.train_seconds:.0f} s "
        f"({rate:,.0f} tokens/s) | train loss {result.train_loss:.4f} (last {RECENT_STEPS} steps)"
    )
    if result.val:
        line += f" | val loss {result.val.loss:.4f}, perplexity {result.val.perplexity:.2f}"
    print(line)
    print(f"wrote {result.run.path}/ (config.yaml, metrics.jsonl, checkpoints/latest, loss.png)")
    return 128 + result.signal if result.interrupted else 0  # 130 for SIGINT, 143 for SIGTERM


def cmd_plot(args: argparse.Namespace) -> int:
    from tinylm.plots import plot_losses

    runs = [RunDir(path) for path in args.runs]
    for run in runs:
        if not run.metrics.is_file():
            raise TinyLMError(f"{run.path}: no metrics.jsonl; is this a tinylm run directory?")
    plot_losses(runs, args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tinylm.atomic import write_atomic
    from tinylm.data.dataset import PreparedDataset
    from tinylm.device import resolve_device
    from tinylm.evaluate import evaluate
    from tinylm.training.checkpoint import load_checkpoint

    if args.batch_size <= 0:
        raise TinyLMError("--batch-size must be positive")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.run, device)
    dataset = PreparedDataset.open(args.data or ckpt.config.data.path)
    own_data = dataset.path.resolve() == Path(ckpt.config.data.path).resolve()
    tok = ckpt.meta["tokenizer"]
    dataset.check_tokenizer(tok["fingerprint"], tok["name"], "the model")
    tokenizer = dataset.tokenizer
    results = {}
    print(f"{'split':>6} {'tokens':>10} {'loss':>8} {'perplexity':>11} {'bits/byte':>10}")
    for split in args.split:
        r = evaluate(
            ckpt.model,
            dataset.tokens(split),
            ckpt.config.model.block_size,
            args.batch_size,
            device,
            tokenizer.token_bytes,
        )
        # Results on another dataset than the run's own are kept apart from its val/test.
        key = split if own_data else f"{dataset.path}:{split}"
        results[key] = {**r.to_dict(), "dataset": str(dataset.path), "step": ckpt.meta["step"]}
        bpb = f"{r.bits_per_byte:.4f}" if r.bits_per_byte is not None else "-"
        print(f"{split:>6} {r.tokens:>10,} {r.loss:>8.4f} {r.perplexity:>11.2f} {bpb:>10}")
    run = RunDir.of_checkpoint(ckpt.path)
    if run is not None:
        eval_file = run.eval_results
        previous = json.loads(eval_file.read_text()) if eval_file.is_file() else {}
        write_atomic(eval_file, json.dumps({**previous, **results}, indent=2) + "\n")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from tinylm.data.dataset import model_tokenizer
    from tinylm.device import resolve_device
    from tinylm.generate import FINISHED, stream
    from tinylm.precision import inference_dtype, resolve_precision
    from tinylm.training.checkpoint import load_checkpoint

    if args.max_new_tokens <= 0 or args.num_samples <= 0:
        raise TinyLMError("--max-new-tokens and --num-samples must be positive")
    if not 0 < args.top_p <= 1:
        raise TinyLMError("--top-p must be in (0, 1]")
    texts = list(args.prompt or [])
    if args.prompts_file is not None:
        try:
            lines = args.prompts_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise TinyLMError(f"{args.prompts_file}: not valid UTF-8 text") from None
        texts += [line for line in lines if line.strip()]
        if not texts:
            raise TinyLMError(f"{args.prompts_file}: no prompts in it (one per line)")
    texts = texts or [""]
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.run, device)
    tokenizer = model_tokenizer(ckpt.meta["tokenizer"], ckpt.config.data.path)
    stops = [tokenizer.eot_id]
    for text in args.stop:
        ids = tokenizer.encode(text)
        if len(ids) != 1:
            raise TinyLMError(
                f"--stop {text!r} is {len(ids)} tokens; give text that is exactly one token"
            )
        stops.append(ids[0])
    # A row per (prompt, sample); an empty prompt starts at a document boundary.
    rows = [t for t in texts for _ in range(args.num_samples)]
    prompt_ids = [tokenizer.encode(t) if t else [tokenizer.eot_id] for t in rows]
    block_size = ckpt.config.model.block_size
    if max(len(p) for p in prompt_ids) + args.max_new_tokens > block_size and not args.no_cache:
        print(
            f"note: prompt + {args.max_new_tokens} new tokens exceeds the model's block_size "
            f"({block_size}); tokens past it are generated without the KV cache (slower)",
            file=sys.stderr,
        )
    generator = torch.Generator(device=device).manual_seed(args.seed)
    # Measured on a 2-core AMX CPU (bench/RESULTS.md): bf16 weights generate slower than
    # fp32 at batch 1 and faster at batch 8; one sample is the common case.
    cpu_auto = args.precision == "auto" and device.type == "cpu"
    precision = "fp32" if cpu_auto else resolve_precision(args.precision, device)
    live = len(rows) == 1  # one sample streams to the terminal as it is generated
    new: list[list[int]] = [[] for _ in rows]
    shown = ""
    if live:
        print(f"--- sample 1 (seed {args.seed}, temperature {args.temperature}) ---")
        print(rows[0], end="", flush=True)
    with inference_dtype(ckpt.model, precision) as model:
        for step in stream(
            model,
            prompt_ids,
            args.max_new_tokens,
            args.temperature,
            args.top_k,
            args.top_p,
            generator,
            stop_tokens=stops,
            use_cache=not args.no_cache,
        ):
            for i, token in enumerate(step.tolist()):
                if token != FINISHED and token not in stops:
                    new[i].append(token)
            if live:
                text = tokenizer.decode(new[0])
                if not text.endswith("\ufffd"):  # hold back a character cut mid-UTF-8
                    print(text[len(shown) :], end="", flush=True)
                    shown = text
    samples = [prompt + tokenizer.decode(ids) for prompt, ids in zip(rows, new, strict=True)]
    if live:
        print(samples[0][len(rows[0]) + len(shown) :])
    else:
        for i, text in enumerate(samples):
            print(f"--- sample {i + 1} (seed {args.seed}, temperature {args.temperature}) ---")
            print(text)
    run = RunDir.of_checkpoint(ckpt.path)
    if run is not None:
        with open(run.samples, "a") as f:
            for i, text in enumerate(samples):
                f.write(
                    f"--- step {ckpt.meta['step']} sample {i + 1} seed {args.seed} "
                    f"temperature {args.temperature} top-k {args.top_k} top-p {args.top_p}\n"
                    f"{text}\n"
                )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tinylm.atomic import write_atomic
    from tinylm.report import build_report, summarize_all, write_report

    runs = [RunDir(p) for p in _run_dirs(args.runs)]
    if not runs:
        raise TinyLMError("no run directories among the paths given")
    summaries = summarize_all(runs)  # reads (and checks) every run first, once
    text = build_report(runs, summaries, title=args.title)
    print(text)
    if len(runs) == 1:
        write_atomic(runs[0].report, text)
    if args.out:
        written = write_report(runs, args.out, args.title, summaries)
        print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def _run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories, a sweep's output directory standing for the runs in it; plain files
    (a shell glob over a sweep's output also matches its report.md) are skipped."""
    found = []
    for path in paths:
        inside = sorted(c.parent for c in path.glob("*/config.yaml")) if path.is_dir() else []
        if path.is_file():
            print(f"tinylm report: skipping {path} (a file, not a run directory)", file=sys.stderr)
        elif not (path / "config.yaml").is_file() and inside:
            found += inside
        else:
            found.append(path)  # a missing or foreign directory is refused by the report
    return found


def cmd_sweep(args: argparse.Namespace) -> int:
    from tinylm.report import write_report
    from tinylm.sweep import check_configs, load_sweep, run_sweep

    if args.jobs < 1:
        raise TinyLMError("--jobs must be at least 1")
    sweep = load_sweep(args.sweep, args.scale, args.overrides, args.out)
    if args.dry_run:
        check_configs(sweep)
        for run in sweep.select(args.only):
            print(f"{run.name}: {sweep.status(run)}")
            print(f"  tinylm {shlex.join(sweep.train_command(run)[3:])}")
        return 0
    code = run_sweep(sweep, args.jobs, args.only)
    runs = [run for run in (RunDir(r.out) for r in sweep.runs) if run.config.is_file()]
    if runs and code != 130:
        title = f"sweep {args.sweep.name}" + (f" (scale {args.scale})" if args.scale else "")
        written = write_report(runs, sweep.out / "report.md", title)
        print(f"wrote {', '.join(str(p) for p in written)}")
    return code


def cmd_export(args: argparse.Namespace) -> int:
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
        f"wrote {result.out}/ (GPT2LMHeadModel, {result.num_parameters:,} parameters, "
        f"{result.tokenizer} tokenizer, README.md) | max logit difference vs tinylm "
        f"{result.max_logit_diff:.2e} (fp32)"
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from tinylm.interop.hf import import_hf

    ckpt = import_hf(args.hf_dir, args.out, tokenizer=args.tokenizer, overwrite=args.overwrite)
    m = ckpt.config.model
    print(
        f"wrote {ckpt.path}/ ({ckpt.meta['num_parameters']:,} parameters: n_layer {m.n_layer}, "
        f"n_head {m.n_head}, n_embd {m.n_embd}, block {m.block_size}, {m.activation}, "
        f"{ckpt.meta['tokenizer']['name']} tokenizer)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
