"""`tinylm plot RUN... [--out PNG]`: train/val loss curves of one or many runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.rundir import RunDir


def register(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tinylm.plots import plot_losses

    runs = [RunDir(path) for path in args.runs]
    for r in runs:
        if not r.metrics.is_file():
            raise TinyLMError(f"{r.path}: no metrics.jsonl; is this a tinylm run directory?")
    plot_losses(runs, args.out)
    print(f"wrote {args.out}")
    return 0
