"""`tinylm data stats DATA`: documents, tokens, top tokens, lengths of a prepared dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
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
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tinylm.data.dataset import PreparedDataset
    from tinylm.data.stats import dataset_stats, format_stats

    dataset = PreparedDataset.open(args.dataset)
    print(format_stats(dataset, dataset_stats(dataset, args.top)))
    return 0
