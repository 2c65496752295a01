"""Results tables built from run directories only (never from memory of a process).

Per run: parameters, tokens seen, training time, tokens/s, train loss (mean of the last
RECENT_STEPS steps), best validation loss (periodic, fixed batches), and whole-split
val/test loss, perplexity and bits per byte from `tinylm eval` (RUN/eval.json).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from tinylm.atomic import write_atomic
from tinylm.config import read_yaml
from tinylm.errors import TinyLMError
from tinylm.rundir import RECENT_STEPS, RunDir, run_labels

COLUMNS = (
    "run",
    "params",
    "tokens",
    "train time",
    "wall time",
    "tokens/s",
    f"train loss (last {RECENT_STEPS} steps)",
    "best val loss (periodic)",
    "val loss",
    "val ppl",
    "val bpb",
    "test loss",
    "test ppl",
    "test bpb",
)


def summarize(run: RunDir) -> dict[str, Any]:
    """The facts a results table needs, read from the run directory's files."""
    if not run.config.is_file():
        raise TinyLMError(f"{run.path}: not a tinylm run directory (no config.yaml)")
    config = read_yaml(run.config)
    if not isinstance(config, dict):
        raise TinyLMError(f"{run.config}: damaged (not the mapping `tinylm train` writes)")
    records = run.read_metrics()
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    meta = run.final_meta()
    evals = run.current_evals(meta)  # the final model's numbers only
    last = train[-1] if train else {}
    # The checkpoint's meta has the final numbers; metrics.jsonl those of a run still going.
    tokens = meta.get("tokens_seen", last.get("tokens"))
    seconds = meta.get("train_seconds", last.get("elapsed_s"))
    return {
        "run": run.path.name,
        "config": config,
        "params": meta.get("num_parameters"),
        "tokens": tokens,
        "train_seconds": seconds,
        "wall_seconds": meta.get("elapsed_s", last.get("elapsed_s")),
        "stop_reason": meta.get("stop_reason"),
        "tokens_per_s": tokens / seconds if tokens and seconds else None,
        "train_loss": meta.get("train_loss", _mean([r["loss"] for r in train[-RECENT_STEPS:]])),
        "best_val_loss": min(
            (r["val_loss"] for r in val if r["val_loss"] is not None), default=None
        ),
        "eval": evals,
    }


def summarize_all(runs: list[RunDir]) -> list[dict[str, Any]]:
    """summarize() of each run, labelled so that no two rows share a name."""
    summaries = [summarize(run) for run in runs]
    for s, label in zip(summaries, run_labels(runs), strict=True):
        s["run"] = label
    return summaries


CSV_COLUMNS = (
    "run",
    "settings",
    "params",
    "tokens",
    "train_seconds",
    "wall_seconds",
    "tokens_per_s",
    "train_loss",
    "best_val_loss",
    "val_loss",
    "val_ppl",
    "val_bpb",
    "test_loss",
    "test_ppl",
    "test_bpb",
    "stop_reason",
    "path",
)


def differing_settings(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run, the config values that are not the same in every run ({} for one run)."""
    flat = [
        {f"{sec}.{k}": v for sec, fields in s["config"].items() for k, v in fields.items()}
        for s in summaries
    ]
    keys = [k for k in flat[0] if len({json.dumps(f.get(k)) for f in flat}) > 1] if flat else []
    return [{k: f.get(k) for k in keys} for f in flat]


def build_report(
    runs: list[RunDir],
    summaries: list[dict[str, Any]],
    plots: list[str] | None = None,
    title: str = "tinylm results",
) -> str:
    """The Markdown report of summarize_all(runs); `plots` are image paths (relative to
    the report) to embed."""
    settings = differing_settings(summaries)
    lines = [f"# {title}", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    for s in summaries:
        ev = s["eval"]
        cells = [
            s["run"],
            _millions(s["params"]),
            _millions(s["tokens"]),
            _minutes(s["train_seconds"]),
            _minutes(s["wall_seconds"]),
            _num(s["tokens_per_s"], "{:,.0f}"),
            _num(s["train_loss"], "{:.4f}"),
            _num(s["best_val_loss"], "{:.4f}"),
        ]
        for split in ("val", "test"):
            r = ev.get(split, {})
            cells += [
                _num(r.get("loss"), "{:.4f}"),
                _num(r.get("perplexity"), "{:.2f}"),
                _num(r.get("bits_per_byte"), "{:.4f}"),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Loss is cross-entropy in nats per token; perplexity = exp(loss); val/test columns "
        "cover whole splits (`tinylm eval`), 'best val loss' the periodic checks on fixed batches; "
        "bpb = bits per UTF-8 byte of text, comparable across tokenizers. Train time excludes "
        "validation, wall time includes it; tokens/s = tokens / train time.",
    ]
    if any(settings):
        lines += ["", "## What differs between the runs", ""]
        lines += [
            f"- **{s['run']}**: {_settings_text(d)}"
            for s, d in zip(summaries, settings, strict=True)
        ]
    for plot in plots or []:
        lines += ["", f"![loss curves]({plot})"]
    if len(summaries) == 1:
        lines += _single_run_details(runs[0], summaries[0])
    return "\n".join(lines) + "\n"


def _single_run_details(run: RunDir, s: dict[str, Any]) -> list[str]:
    cfg = s["config"]
    m, o, t = cfg["model"], cfg["optim"], cfg["train"]
    lines = [
        "",
        "## Setup",
        "",
        f"- model: {m['n_layer']} layers, {m['n_head']} heads, n_embd {m['n_embd']}, "
        f"block {m['block_size']}, vocab {m['vocab_size']:,}, dropout {m['dropout']}, "
        f"tied embeddings: {m['tie_embeddings']}; {m.get('norm', 'layernorm')}, "
        f"{m.get('positions', 'learned')} positions, {m.get('activation', 'gelu')} MLP",
        f"- optimizer: {_optimizer_text(o)}",
        f"- schedule: {_schedule_text(o)}",
        f"- batch {t['batch_size']} x {m['block_size']} tokens, seed {t['seed']}, "
        f"data {cfg['data']['path']}",
    ]
    if run.loss_plot.is_file():
        lines += ["", f"![loss curves]({run.loss_plot.name})"]
    if run.samples.is_file():
        samples = run.samples.read_text().strip()
        lines += ["", "## Samples", "", "```", samples[-3000:], "```"]
    return lines


def _optimizer_text(o: dict[str, Any]) -> str:
    adamw = (f"AdamW lr {o['lr']}, weight decay {o['weight_decay']}, "
             f"betas ({o['beta1']}, {o['beta2']})")  # fmt: skip
    if o.get("optimizer") == "muon":
        return (f"Muon lr {o['muon_lr']} (momentum {o['muon_momentum']}, weight decay "
                f"{o['muon_weight_decay']}) on the blocks' matrices; {adamw} on the rest; "
                f"grad clip {o['grad_clip']}")  # fmt: skip
    return f"{adamw}, grad clip {o['grad_clip']}"


def _schedule_text(o: dict[str, Any]) -> str:
    kind = o.get("schedule", "constant")
    if kind == "constant" and not o.get("warmup"):
        return "constant"
    unit = o.get("schedule_unit", "steps")
    warmup = f"{o['warmup']:g} of the time budget" if unit == "time" else f"{o['warmup']:g} {unit}"
    text = f"{kind}, warmup {warmup}"
    if kind == "wsd":
        text += (f", {o.get('decay_shape', 'linear')} decay over the last "
                 f"{o['decay_fraction']:g}")  # fmt: skip
    if kind != "constant":
        text += f" to {o['min_lr_ratio']:g} x lr"
    return text


def csv_rows(runs: list[RunDir], summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row of raw numbers per run (CSV_COLUMNS), for spreadsheets and scripts."""
    rows = []
    for run, s, d in zip(runs, summaries, differing_settings(summaries), strict=True):
        ev = s["eval"]
        row = {
            "run": s["run"],
            "settings": _settings_text(d),
            "params": s["params"],
            "tokens": s["tokens"],
            "train_seconds": s["train_seconds"],
            "wall_seconds": s["wall_seconds"],
            "tokens_per_s": s["tokens_per_s"],
            "train_loss": s["train_loss"],
            "best_val_loss": s["best_val_loss"],
            "stop_reason": s["stop_reason"],
            "path": str(run.path),
        }
        for split in ("val", "test"):
            r = ev.get(split, {})
            row[f"{split}_loss"] = r.get("loss")
            row[f"{split}_ppl"] = r.get("perplexity")
            row[f"{split}_bpb"] = r.get("bits_per_byte")
        rows.append(row)
    return rows


def write_report(
    runs: list[RunDir],
    out: Path,
    title: str = "tinylm results",
    summaries: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """OUT.md with its table and plots, beside it OUT.csv and two PNGs: loss against
    tokens seen and against wall time, all runs on each. Returns the files written."""
    from tinylm.plots import plot_losses

    summaries = summaries if summaries is not None else summarize_all(runs)
    out = out.with_suffix(".md")
    written = []
    plots = []
    for axis, suffix in (("tokens", "tokens"), ("elapsed_s", "time")):
        png = out.with_name(f"{out.stem}-loss-vs-{suffix}.png")
        plot_losses(runs, png, x=axis, title=title)
        plots.append(png.name)
        written.append(png)
    csv_file = out.with_suffix(".csv")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(runs, summaries))
    write_atomic(csv_file, buffer.getvalue())
    write_atomic(out, build_report(runs, summaries, plots, title))
    return [out, csv_file, *written]


def _settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in settings.items())


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _mean(values: list[float | None]) -> float | None:
    """Mean of the finite values; a skipped (non-finite) step is logged as null."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _num(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(value)


def _millions(value: Any) -> str:
    return "-" if value is None else f"{value / 1e6:.2f}M"


def _minutes(seconds: Any) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"
