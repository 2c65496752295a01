"""One module per `tinylm` command: its argument parser (`register`) beside its handler
(`run`). `COMMANDS` is the one table the CLI builds itself from, in `--help` order.

A command module imports only argparse-level things at the top, so `tinylm --help` stays
instant; torch and the rest of the library are imported inside `run`.
"""

COMMANDS: dict[str, str] = {
    "prepare": "prepare",
    "tokenizer": "tokenizer",
    "data": "data",
    "train": "train",
    "eval": "eval",
    "generate": "generate",
    "serve": "serve",
    "report": "report",
    "sweep": "sweep",
    "plot": "plot",
    "export": "export",
    "import": "import_hf",
}
"""Command name -> module in tinylm.commands (`import` is a Python keyword)."""
