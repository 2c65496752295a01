"""`tinylm sweep SWEEP.yaml [--scale S]`: many runs from one file, resumable, + report."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from tinylm.commands.options import number
from tinylm.config import Limit
from tinylm.rundir import RunDir


def register(sub: argparse._SubParsersAction) -> None:
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
        "--jobs",
        type=number(int, Limit(1, 4096)),
        default=1,
        help="runs at once, as separate processes (default: 1)",
    )
    p.add_argument(
        "--only",
        type=lambda text: [name for name in text.split(",") if name],
        metavar="NAME[,NAME...]",
        help="run only these runs (comma-separated names)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs, their state and commands")
    p.set_defaults(func=run, settings_attr="overrides")


def run(args: argparse.Namespace) -> int:
    from tinylm.report import write_report
    from tinylm.sweep import check_configs, load_sweep, run_sweep

    sweep = load_sweep(args.sweep, args.scale, args.overrides, args.out)
    if args.dry_run:
        check_configs(sweep)
        for r in sweep.select(args.only):
            print(f"{r.name}: {sweep.status(r)}")
            print(f"  tinylm {shlex.join(sweep.train_command(r)[3:])}")
        return 0
    code = run_sweep(sweep, args.jobs, args.only)
    runs = [r for r in (RunDir(r.out) for r in sweep.runs) if r.config.is_file()]
    if runs and code != 130:
        title = f"sweep {args.sweep.name}" + (f" (scale {args.scale})" if args.scale else "")
        written = write_report(runs, sweep.out / "report.md", title)
        print(f"wrote {', '.join(str(p) for p in written)}")
    return code
