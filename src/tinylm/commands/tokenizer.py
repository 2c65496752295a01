"""`tinylm tokenizer train SOURCE... --vocab-size N --out DIR`: an own byte-level BPE."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinylm.commands.options import SEED_LIMIT, add_source_args, number, source_options
from tinylm.config import Limit


def register(sub: argparse._SubParsersAction) -> None:
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
    t.add_argument(
        "--vocab-size",
        type=number(int, Limit(1, 2**20)),
        required=True,
        help="tokens, EOT included",
    )
    t.add_argument("--min-frequency", type=int, default=2, help="rarest merge kept (default: 2)")
    t.add_argument("--split", default="98,1,1", help="as for prepare: only train documents")
    t.add_argument(
        "--seed", type=number(int, SEED_LIMIT), default=1337, help="as for prepare (default: 1337)"
    )
    add_source_args(t)
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tinylm.data.stats import training_texts
    from tinylm.data.tokenizer import get_tokenizer, train_bpe

    source, clean, split = source_options(args)
    texts = training_texts(args.sources, source, clean, split, args.seed)
    file = train_bpe(texts, args.vocab_size, args.out, args.min_frequency)
    tok = get_tokenizer(str(file))
    print(f"wrote {file} ({tok.name}, fingerprint {tok.fingerprint[:12]})")
    print(f"next: tinylm prepare {' '.join(args.sources)} --tokenizer {file} --out DATA")
    return 0
