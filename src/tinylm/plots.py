"""Loss curves from run directories' metrics.jsonl (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tinylm.rundir import RunDir  # noqa: E402


def plot_losses(runs: list[RunDir], out: Path, smoothing: float = 0.9) -> None:
    """Train loss (raw, faint; and an exponential moving average) and validation loss
    against tokens seen, one colour per run, into a PNG."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        records = run.read_metrics()
        # A skipped (non-finite) step's loss is null.
        train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
        val = [r for r in records if r.get("kind") == "val" and r.get("val_loss") is not None]
        label = run.path.name
        if train:
            x = [r["tokens"] for r in train]
            y = [r["loss"] for r in train]
            ax.plot(x, y, color=color, alpha=0.2, linewidth=0.8)
            ax.plot(x, _ema(y, smoothing), color=color, linewidth=1.5, label=f"{label} train (EMA)")
        if val:
            ax.plot(
                [r["tokens"] for r in val],
                [r["val_loss"] for r in val],
                color=color,
                linestyle="--",
                marker="o",
                markersize=4,
                label=f"{label} val",
            )
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title("tinylm loss curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)


def _ema(values: list[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out
