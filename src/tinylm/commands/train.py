"""`tinylm train [CONFIG.yaml] [k=v...] --out RUN [--resume]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinylm.errors import TinyLMError


def register(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run, settings_attr="settings")


def run(args: argparse.Namespace) -> int:
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

    from tinylm.distributed import is_main
    from tinylm.rundir import RECENT_STEPS
    from tinylm.training.trainer import train

    result = train(config, args.out, overwrite=args.overwrite, resume=args.resume)
    exit_code = 128 + result.signal if result.interrupted else 0  # 130 SIGINT, 143 SIGTERM
    if not is_main():  # under torchrun rank 0 reports for the run
        return exit_code
    rate = result.tokens / result.train_seconds if result.train_seconds else 0.0
    line = (
        f"trained {result.steps:,} steps, {result.tokens:,} tokens in {result.train_seconds:.0f} s "
        f"({rate:,.0f} tokens/s) | train loss {result.train_loss:.4f} (last {RECENT_STEPS} steps)"
    )
    if result.val:
        line += f" | val loss {result.val.loss:.4f}, perplexity {result.val.perplexity:.2f}"
    print(line)
    print(f"wrote {result.run.path}/ (config.yaml, metrics.jsonl, checkpoints/latest, loss.png)")
    return exit_code
