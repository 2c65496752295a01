"""Loss curves from run directories' metrics.jsonl (matplotlib, no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tinylm.atomic import write_atomic  # noqa: E402
from tinylm.rundir import RunDir, run_labels  # noqa: E402

X_AXES = {"tokens": "tokens seen", "elapsed_s": "wall time (minutes, validation included)"}


def plot_losses(
    runs: list[RunDir],
    out: Path,
    smoothing: float = 0.9,
    x: str = "tokens",
    title: str = "tinylm loss curves",
) -> None:
    """Train loss (raw and faint for up to 4 runs; and an exponential moving average) and
    validation loss against tokens seen (x="tokens") or wall time (x="elapsed_s"), one
    colour per run, into a PNG."""
    scale = 1 / 60 if x == "elapsed_s" else 1
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=90)
    later: list[float] = []  # smoothed losses after each run's first 10%: the y range
    for i, (run, label) in enumerate(zip(runs, run_labels(runs), strict=True)):
        color = f"C{i % 10}"
        style = ("-", "-.", ":")[i // 10 % 3]  # more than 10 runs: colours repeat
        records = run.read_metrics()
        # A skipped (non-finite) step's loss is null.
        train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
        val = [r for r in records if r.get("kind") == "val" and r.get("val_loss") is not None]
        if train:
            xs = [r[x] * scale for r in train]
            y = [r["loss"] for r in train]
            ema = _ema(y, smoothing)
            later += ema[len(ema) // 10 :]
            stride = max(1, len(xs) // 800)  # enough points to see the noise, small PNGs
            if len(runs) <= 4:  # more runs' raw noise would hide the smoothed curves
                ax.plot(xs[::stride], y[::stride], color=color, alpha=0.2, linewidth=0.8)
            ax.plot(
                xs[::stride],
                ema[::stride],
                color=color,
                linestyle=style,
                linewidth=1.5,
                label=f"{label} train (EMA)",
            )
        if val:
            later += [r["val_loss"] for r in val[len(val) // 10 :]]
            ax.plot(
                [r[x] * scale for r in val],
                [r["val_loss"] for r in val],
                color=color,
                linestyle="--",
                marker="o",
                markersize=4,
                label=f"{label} val",
            )
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    if later:  # the first steps' ~10.8 nats would flatten everything after them
        low, high = ax.get_ylim()
        pad = 0.05 * (max(later) - min(later)) + 0.02
        ax.set_ylim(max(low, min(later) - pad), min(high, max(later) + pad))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small" if len(runs) <= 6 else "x-small", ncol=1 + len(runs) // 8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    write_atomic(out, png.getvalue())  # whole or not at all, no temp file left


def _ema(values: list[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out
