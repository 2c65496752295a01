"""Arguments more than one command takes, defined once."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinylm.errors import TinyLMError


def add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run directory (or checkpoint directory)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")


def add_source_args(p: argparse.ArgumentParser) -> None:
    """How `prepare` and `tokenizer train` read and clean their sources."""
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


def source_options(args: argparse.Namespace):
    """(SourceOptions, CleanOptions, split shares) from the arguments of add_source_args."""
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
