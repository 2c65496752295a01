"""The headline table of docs/results/README.md, from the run directories.

    python docs/results/summary.py [runs/gpu] [runs]

For every ablation: val loss and val bits/byte per seed (H200 runs, seeds 1337 and 1),
the mean change against Exp 1 of the same seed, and the CPU run (seed 1337) where it exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tinylm.report import summarize
from tinylm.rundir import RunDir

SEEDS = (1337, 1)
ROWS = [  # (label, sweep, run)
    ("exp1: the baseline (lr 1e-3, constant, dropout 0.1, untied, GPT-2 BPE)", "study", "exp1"),
    ("exp2: lr 5e-4", "study", "exp2"),
    ("exp3: n_embd 256, lr 5e-4, batch 16", "study", "exp3"),
    ("lr 2.5e-4", "ablations", "lr-0.00025"),
    ("lr 2e-3", "ablations", "lr-0.002"),
    ("lr 4e-3", "ablations", "lr-0.004"),
    ("warmup + cosine", "ablations", "cosine"),
    ("warmup + WSD", "ablations", "wsd"),
    ("warmup + cosine, lr 2e-3", "ablations", "cosine-lr-0.002"),
    ("warmup + WSD, lr 2e-3", "ablations", "wsd-lr-0.002"),
    ("dropout 0", "ablations", "dropout-0"),
    ("tied embeddings", "ablations", "tied"),
    ("BPE 8k trained on the corpus", "ablations", "bpe-8k"),
    ("BPE 16k trained on the corpus", "ablations", "bpe-16k"),
]


def val(run: Path) -> tuple[float, float] | None:
    if not (run / "eval.json").is_file():
        return None
    ev = summarize(RunDir(run))["eval"]["val"]
    return ev["loss"], ev["bits_per_byte"]


def main(gpu: Path, cpu: Path) -> None:
    base = {s: val(gpu / f"study-s{s}" / "exp1") for s in SEEDS}
    print("| run | val loss (seed 1337 / 1) | val bpb (seed 1337 / 1) | mean Δ bpb vs exp1 | CPU val loss / bpb |")
    print("|---|---|---|---|---|")
    for label, sweep, name in ROWS:
        got = {s: val(gpu / f"{sweep}-s{s}" / name) for s in SEEDS}
        if not all(got.values()):
            continue
        losses = " / ".join(f"{got[s][0]:.4f}" for s in SEEDS)
        bpbs = " / ".join(f"{got[s][1]:.4f}" for s in SEEDS)
        delta = sum(got[s][1] - base[s][1] for s in SEEDS) / len(SEEDS)
        cpu_dir = cpu / ("seed_study-cpu" if sweep == "study" else "ablations") / name
        on_cpu = val(cpu_dir)
        cpu_text = f"{on_cpu[0]:.4f} / {on_cpu[1]:.4f}" if on_cpu else "-"
        print(f"| {label} | {losses} | {bpbs} | {delta:+.4f} | {cpu_text} |")


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    main(args[0] if args else Path("runs/gpu"), args[1] if len(args) > 1 else Path("runs"))
