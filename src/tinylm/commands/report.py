"""`tinylm report RUN... [--out FILE.md]`: results table (Markdown, CSV) and loss plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.rundir import RunDir


def register(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tinylm.atomic import write_atomic
    from tinylm.report import build_report, summarize_all, write_report

    runs = [RunDir(p) for p in run_dirs(args.runs)]
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


def run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories, a sweep's output directory standing for the runs in it; plain files
    (a shell glob over a sweep's output also matches its report.md) are skipped."""
    found = []
    for path in paths:
        # Hidden directories are no runs: `.RUN.previous` is one an --overwrite set aside.
        configs = path.glob("*/config.yaml") if path.is_dir() else []
        inside = sorted(c.parent for c in configs if not c.parent.name.startswith("."))
        if path.is_file():
            print(f"tinylm report: skipping {path} (a file, not a run directory)", file=sys.stderr)
        elif not (path / "config.yaml").is_file() and inside:
            found += inside
        else:
            found.append(path)  # a missing or foreign directory is refused by the report
    return found
