"""Arguments more than one command takes, defined once."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinylm.config import DEFAULT_LIMIT, Limit, parse_number
from tinylm.errors import TinyLMError

SEED_LIMIT = Limit(0, 2**63 - 1)  # a seed is hashed as a signed 64-bit integer


def number(kind: type, limit: Limit = DEFAULT_LIMIT) -> Callable[[str], Any]:
    """An argparse type for a numeric flag: read like a config value of `kind`, finite,
    within `limit` (by default a non-negative number). Every int or float flag gets one:
    the CLI wraps a plain `type=int`/`float` in number(kind) (see cli.checked_numbers)."""

    def parse(text: str) -> Any:
        try:
            return parse_number(text, kind, limit, "value")
        except TinyLMError as err:
            raise argparse.ArgumentTypeError(re.sub(r"^value:? ", "", str(err))) from None

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    parse.kind, parse.limit = kind, limit  # type: ignore[attr-defined]  # for tests and docs
    return parse


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
    p.add_argument(
        "--min-chars", type=number(int), default=1, help="drop shorter documents (default: 1)"
    )
    p.add_argument("--no-dedup", action="store_true", help="keep exact duplicate documents")


def source_options(args: argparse.Namespace):
    """(SourceOptions, CleanOptions, split shares) from the arguments of add_source_args."""
    from tinylm.data.clean import CleanOptions
    from tinylm.data.prepare import parse_split
    from tinylm.data.sources import SourceOptions

    source = SourceOptions(args.text_field, args.on_invalid_utf8, args.hf_split)
    clean = CleanOptions(
        normalize=args.normalize,
        strip_control=not args.keep_control,
        normalize_whitespace=not args.keep_whitespace,
        min_chars=args.min_chars,
        dedup=not args.no_dedup,
    )
    return source, clean, parse_split(args.split)
