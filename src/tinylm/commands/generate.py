"""`tinylm generate RUN --prompt TEXT...`: sample text (KV cache, batch, streaming)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinylm.commands.options import SEED_LIMIT, add_checkpoint_args, number
from tinylm.config import COUNT, INFERENCE_PRECISIONS, Limit
from tinylm.errors import TinyLMError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="sample text from a trained model",
        description="Continue one or more prompts with the run's latest checkpoint, all in "
        "one batch with a KV cache. A single sample streams to the terminal as it is "
        "generated; samples are also appended to RUN/samples.txt.",
    )
    add_checkpoint_args(p)
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
        choices=INFERENCE_PRECISIONS,
        default="auto",
        help="weights' precision while generating; auto: fp32 on a CPU (faster than bf16 at "
        "batch 1 there; bf16 wins from batch 8), as for training on a GPU (default: auto)",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="recompute the whole context every token (slow)"
    )
    p.add_argument(
        "--max-new-tokens",
        type=number(int, Limit(1, COUNT)),
        default=100,
        help="tokens to generate (default: 100)",
    )
    p.add_argument(
        "--temperature",
        type=number(float, Limit(0, 1e6)),
        default=0.8,
        help="0 = greedy (default: 0.8)",
    )
    p.add_argument(
        "--top-k",
        type=number(int, Limit(0, 2**32)),
        default=50,
        help="keep the k likeliest tokens; 0 = all (default: 50)",
    )
    p.add_argument(
        "--top-p",
        type=number(float, Limit(0, 1, low_open=True)),
        default=0.95,
        help="nucleus sampling mass; 1 = off (default: 0.95)",
    )
    p.add_argument(
        "--num-samples",
        type=number(int, Limit(1, COUNT)),
        default=1,
        help="samples to draw (default: 1)",
    )
    p.add_argument(
        "--seed", type=number(int, SEED_LIMIT), default=0, help="sampling seed (default: 0)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tinylm.inference import Sampling, complete, load_for_inference

    sampling = Sampling(
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.top_p,
        args.seed,
        tuple(args.stop),
        use_cache=not args.no_cache,
    )
    try:
        sampling.check()
    except TinyLMError as err:
        raise TinyLMError(f"--{str(err).replace('_', '-')}") from None
    texts = _prompts(args)
    loaded = load_for_inference(args.run, args.device, args.precision)
    rows = [t for t in texts for _ in range(args.num_samples)]  # a row per (prompt, sample)
    longest = max(len(loaded.tokenizer.encode(t)) if t else 1 for t in rows)
    if longest + args.max_new_tokens > loaded.block_size and not args.no_cache:
        print(
            f"note: prompt + {args.max_new_tokens} new tokens exceeds the model's block_size "
            f"({loaded.block_size}); tokens past it are generated without the KV cache (slower)",
            file=sys.stderr,
        )
    header = f"(seed {args.seed}, temperature {args.temperature})"
    live = len(rows) == 1  # one sample streams to the terminal as it is generated
    if live:
        print(f"--- sample 1 {header} ---")
        print(rows[0], end="", flush=True)
        samples = complete(loaded, rows, sampling, lambda text: print(text, end="", flush=True))
        print()
    else:
        samples = complete(loaded, rows, sampling)
        for i, text in enumerate(samples):
            print(f"--- sample {i + 1} {header} ---")
            print(text)
    if loaded.run is not None:
        with open(loaded.run.samples, "a") as f:
            for i, text in enumerate(samples):
                f.write(
                    f"--- step {loaded.step} sample {i + 1} seed {args.seed} "
                    f"temperature {args.temperature} top-k {args.top_k} top-p {args.top_p}\n"
                    f"{text}\n"
                )
    return 0


def _prompts(args: argparse.Namespace) -> list[str]:
    """--prompt texts, then the lines of --prompts-file; one empty prompt if none."""
    texts = list(args.prompt or [])
    if args.prompts_file is not None:
        try:
            lines = args.prompts_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise TinyLMError(f"{args.prompts_file}: not valid UTF-8 text") from None
        texts += [line for line in lines if line.strip()]
        if not texts:
            raise TinyLMError(f"{args.prompts_file}: no prompts in it (one per line)")
    return texts or [""]
