"""The run directory: everything one training run writes, in one place.

RUN/config.yaml                  resolved configuration (all fields, presets expanded)
RUN/metrics.jsonl                one JSON record per logged step / validation / eval
RUN/checkpoints/step-NNNNNNNN/   one checkpoint (see training/checkpoint.py)
RUN/checkpoints/latest, best     symlinks to the newest and the best-validating one
RUN/tensorboard/                 TensorBoard event files (same scalars as metrics.jsonl)
RUN/loss.png                     train and validation loss curves
RUN/eval.json                    `tinylm eval` results per split
RUN/samples.txt                  `tinylm generate` output
RUN/report.md                    `tinylm report` summary
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinylm.atomic import write_atomic
from tinylm.errors import TinyLMError

RECENT_STEPS = 50
"""The reported train loss is the mean of this many last steps (one batch is noisy)."""
FINISHED = ("budget", "early_stop")
"""A checkpoint meta's stop_reason when the run is done (a signal's stop is an interruption)."""
SUPERVISED_ENV = "TINYLM_SUPERVISED"
"""Set by `tinylm sweep` for its runs: a second SIGINT/SIGTERM (the job's and the sweep's
relay of it) does not abort the run's checkpoint."""


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> RunDir | None:
        """The run a checkpoint (RUN/checkpoints/NAME) belongs to, if it is inside one."""
        run = cls(checkpoint.resolve().parent.parent)
        return run if run.config.is_file() else None

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def latest_checkpoint(self) -> Path:
        return self.checkpoints / "latest"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def loss_plot(self) -> Path:
        return self.path / "loss.png"

    @property
    def eval_results(self) -> Path:
        return self.path / "eval.json"

    @property
    def samples(self) -> Path:
        return self.path / "samples.txt"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    def final_meta(self) -> dict[str, Any]:
        """The latest checkpoint's meta.json ({} before the first checkpoint)."""
        meta_file = self.latest_checkpoint / "meta.json"
        if not meta_file.is_file():
            return {}
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError
        except ValueError:
            raise TinyLMError(
                f"{meta_file}: damaged checkpoint metadata; point checkpoints/latest at an "
                "earlier step-N directory, or train the run again"
            ) from None
        return meta

    def current_evals(self, meta: dict[str, Any]) -> dict[str, Any]:
        """eval.json's splits measured on the checkpoint `meta` describes, on the run's own
        data (eval.json also keeps results of earlier steps and other datasets); all of it
        when there is no meta to compare with."""
        results = self.read_eval_results()
        return {
            split: r
            for split, r in results.items()
            if not meta
            or (r.get("step") == meta.get("step") and r.get("dataset") == meta.get("dataset"))
        }

    def read_eval_results(self) -> dict[str, Any]:
        """eval.json's results per split ({} when there is none); a damaged one is refused."""
        if not self.eval_results.is_file():
            return {}
        try:
            results = json.loads(self.eval_results.read_text(encoding="utf-8"))
            if not isinstance(results, dict) or not all(
                isinstance(r, dict) for r in results.values()
            ):
                raise ValueError
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise TinyLMError(
                f"{self.eval_results}: damaged (not the JSON object `tinylm eval` writes); "
                "delete it and run `tinylm eval` again"
            ) from None
        return results

    def record_eval_results(self, results: dict[str, Any]) -> None:
        """Merge new per-split results into eval.json. A damaged eval.json does not cost
        the new results: it is kept as eval.json.damaged, with a note."""
        try:
            previous = self.read_eval_results()
        except TinyLMError:
            damaged = self.eval_results.with_name(self.eval_results.name + ".damaged")
            self.eval_results.replace(damaged)
            print(f"note: {self.eval_results} was damaged; moved it to {damaged} and wrote "
                  "the new results alone", file=sys.stderr)  # fmt: skip
            previous = {}
        write_atomic(self.eval_results, json.dumps({**previous, **results}, indent=2) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            raise TinyLMError(f"{self.path}: no metrics.jsonl; is this a tinylm run directory?")
        return parse_metrics(self.metrics)


def parse_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records. A run killed mid-write leaves at most one partial last line,
    which is skipped; a damaged line before the last is refused, not silently cut short."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError
        except ValueError:
            if number == len(lines):
                break
            raise TinyLMError(
                f"{path}:{number}: damaged record (not a JSON object); delete that line (or "
                "restore the file) and run the command again"
            ) from None
        records.append(record)
    return records


def run_labels(runs: list[RunDir]) -> list[str]:
    """Names for runs in one table or plot: the directory names, or parent/name where two
    runs share a name (the same run of two sweeps)."""
    names = [run.path.name for run in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{run.path.parent.name}/{run.path.name}" for run in runs]
