"""The `tinylm` command: one entry point, one subcommand per pipeline stage.

    tinylm prepare SOURCE... --out DATA      text -> token shards + manifest
    tinylm tokenizer train SOURCE... --vocab-size N --out DIR
    tinylm data stats DATA                    documents, tokens, top tokens, lengths
    tinylm train [CONFIG.yaml] [k=v...] --out RUN [--resume]
    tinylm eval RUN [--split val test]        loss, perplexity, bits per byte
    tinylm generate RUN --prompt TEXT...      sample text (KV cache, batch, streaming)
    tinylm serve RUN... [--port 8000]         OpenAI-compatible HTTP API + web playground
    tinylm report RUN... [--out FILE.md]      results table (Markdown, CSV, loss plots)
    tinylm sweep SWEEP.yaml [--scale S]       many runs from one file, resumable, + report
    tinylm plot RUN... [--out PNG]            train/val loss curves of one or many runs
    tinylm export RUN --format hf OUT         transformers model directory (or pt2)
    tinylm import HF_DIR --out CKPT           GPT-2-format transformers dir -> checkpoint

Each command lives in its own module of tinylm.commands (parser beside handler), listed
in one table, COMMANDS. This module only builds the parser from that table and turns the
errors a user can cause into one line and exit status 2; heavy imports (torch) happen
only inside the command that runs, so --help is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from tinylm import __version__
from tinylm.commands import COMMANDS
from tinylm.commands.options import number
from tinylm.errors import TinyLMError, is_out_of_memory

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        # `section.key=value` settings may also follow options (`--scale cpu train.seed=1`).
        late = getattr(args, "settings_attr", None)
        if extra and late and all("=" in e and not e.startswith("-") for e in extra):
            setattr(args, late, getattr(args, late) + extra)
        elif extra:  # blamed on the command that was given them, in its one line
            _command_parser(parser, argv).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exit:  # a bad argument (status 2), --help or --version (0)
        return exit.code if isinstance(exit.code, int) else EXIT_USER_ERROR
    try:
        return args.func(args) or 0
    except TinyLMError as err:
        return _fail(args.command, str(err))
    except OSError as err:  # disk full, read-only or missing output folder, ...
        return _fail(args.command, f"{err.filename or ''}: {err.strerror or err}".lstrip(": "))
    except RuntimeError as err:
        if not is_out_of_memory(err):
            raise
        return _fail(
            args.command,
            "out of memory; use a smaller batch (--batch-size, train.batch_size) or model",
        )
    except KeyboardInterrupt:
        print(f"tinylm {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _fail(command: str, message: str) -> int:
    """The one place an error a user caused becomes output: one line, exit status 2."""
    message = " ".join(message.split())  # one line, whatever the error text held
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank meets it; one says it
        name = f"tinylm {command}".rstrip()  # "" for the top parser's own errors
        print(f"{name}: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line every tinylm error is (no usage block)."""

    def error(self, message: str) -> NoReturn:
        _fail(self.prog.removeprefix("tinylm").strip(), f"{message} (see `{self.prog} --help`)")
        raise SystemExit(EXIT_USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tinylm",
        description="Train small GPT-style language models from scratch: "
        "prepare data, train, evaluate, generate, report.",
        epilog="Quick start: make demo. Each subcommand has its own --help.",
    )
    parser.add_argument("--version", action="version", version=f"tinylm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(f"tinylm.commands.{module}").register(sub)
    checked_numbers(parser)
    return parser


def _command_parser(parser: argparse.ArgumentParser, argv: list[str] | None):
    """The (sub)parser of the command named in argv (`tokenizer train` -> its parser)."""
    words = sys.argv[1:] if argv is None else argv
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for i, word in enumerate(words):
                if word in action.choices:
                    return _command_parser(action.choices[word], words[i + 1 :])
    return parser


def checked_numbers(parser: argparse.ArgumentParser) -> None:
    """Every `type=int` / `type=float` flag of every command, present and future, reads
    its value through options.number: finite, non-negative and sane unless the flag
    declares its own range with number(kind, Limit(...))."""
    for action in parser._actions:  # argparse keeps no public list
        if action.type in (int, float):
            action.type = number(action.type)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                checked_numbers(sub)


if __name__ == "__main__":
    raise SystemExit(main())
