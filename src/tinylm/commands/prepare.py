"""`tinylm prepare SOURCE... --out DATA`: text -> token shards + manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinylm.commands.options import SEED_LIMIT, add_source_args, number, source_options
from tinylm.config import Limit
from tinylm.errors import TinyLMError


def register(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--seed",
        type=number(int, SEED_LIMIT),
        default=1337,
        help="seed of the split (default: 1337)",
    )
    p.add_argument("--weights", help="mixture weight per source, e.g. 1,0.5 (default: all 1)")
    add_source_args(p)
    p.add_argument(
        "--workers",
        type=number(int, Limit(0, 4096)),
        default=0,
        help="tokenizer processes; 0 = one per core, 1 = in this process (default: 0)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tinylm.data.prepare import PrepareOptions, prepare

    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise TinyLMError(f"--weights {args.weights!r}: expected numbers, e.g. 1,0.5") from None
    source, clean, split = source_options(args)
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
