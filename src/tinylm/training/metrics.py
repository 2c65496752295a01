"""Where training measurements go: RUN/metrics.jsonl and TensorBoard event files.

One record per call: {"kind": "train" | "val", "step", "tokens", "elapsed_s", ...}.
Every numeric field becomes a TensorBoard scalar `<kind>/<field>` at that step (all of
a record's scalars in one event).
A resumed run first drops the records of steps after its checkpoint (they will be
trained again), so the file holds one unbroken history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinylm.atomic import write_atomic
from tinylm.rundir import parse_metrics
from tinylm.training.checkpoint import json_safe


class MetricsLog:
    def __init__(
        self,
        jsonl: Path,
        tensorboard_dir: Path | None,
        resume_step: int | None,
        resume_records: int | None = None,
    ) -> None:
        """resume_records: how many records the resumed checkpoint accounts for (its meta's
        metrics_records); later ones were written after it (a final validation, say) and
        will be written again. Older checkpoints lack it: records past their step go."""
        self.records = 0
        if resume_step is not None and jsonl.is_file():
            records = parse_metrics(jsonl)
            if resume_records is not None:
                kept = records[:resume_records]
            else:
                kept = [r for r in records if r.get("step", 0) <= resume_step]
            write_atomic(jsonl, "".join(json.dumps(r) + "\n" for r in kept))
            self.records = len(kept)
        self.file = open(jsonl, "a" if resume_step is not None else "w")  # noqa: SIM115
        self.tb = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: ~1 s

            # purge_step hides events a killed run wrote past its checkpoint. A queue of
            # 100 events: with the default 10 each record waited for the writer thread.
            purge = resume_step + 1 if resume_step is not None else None
            self.tb = SummaryWriter(str(tensorboard_dir), purge_step=purge, max_queue=100)

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(json_safe(record)) + "\n")
        self.file.flush()
        self.records += 1
        if self.tb is not None:
            from tensorboard.compat.proto.summary_pb2 import Summary
            from torch.utils.tensorboard.summary import scalar

            # All of a record's scalars in one event (one per scalar cost 390 µs a record,
            # bench/loop_overhead.py; this ~80 µs).
            kind = record["kind"]
            values = [v for key, value in record.items()
                      if key not in ("kind", "step") and isinstance(value, int | float)
                      for v in scalar(f"{kind}/{key}", value).value]  # fmt: skip
            self.tb._get_file_writer().add_summary(Summary(value=values), record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
