"""docs/results/recipe.md's tables, plots and samples, rebuilt from the recipe runs.

    python docs/results/recipe.py [--runs runs/recipe] [--no-samples]

Reads every run directory under RUNS (made by the sweeps that recipe.md names), then
rewrites the generated blocks of docs/results/recipe.md (the text between
`<!-- recipe:NAME -->` and `<!-- /recipe:NAME -->`; the prose around them is kept) and
writes docs/results/recipe.csv and docs/results/recipe-*.png.

Runs whose configs differ only in train.seed are one candidate, wherever their directories
are (a final's seed-1337 run is the search's run of the same config); its numbers are the
median over its seeds. Bits per byte are from `tinylm eval` on whole splits: val and test
of builtin:wiki + builtin:sotu, and the test splits of builtin:shakespeare and
builtin:bible prepared with the run's own tokenizer (out of domain: never trained on).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tinylm.config import read_yaml  # noqa: E402
from tinylm.report import summarize  # noqa: E402
from tinylm.rundir import RunDir  # noqa: E402

HERE = Path(__file__).parent
DOC = HERE / "recipe.md"
SETS = ("val", "test", "shakespeare", "bible")
"""The four bits-per-byte columns: in-domain val and test, two out-of-domain sets."""
FINALS = {5: "finals-5min", 30: "finals-30min"}
"""Budget (minutes) -> directory of its final runs: `baseline_seed-N` and `recipe_seed-N`."""
PROMPTS = ("The history of", "In the year 1861, the President", "The King said to his people")
SLICE = "val bits/byte: periodic, the first ~8k tokens of val"
"""The curves' y axis: the validations during training see a slice of val (its first 4-8
batches), harder text than the whole split, so they sit above the tables' numbers."""
ROOTS = ("baseline-b8-lr1.5e-3", "centre")
"""The first runs of the two 5-minute searches; later rows start from lr-half or batch-32."""
SAMPLE_CHARS = 240  # continuations are cut here (at a space): tokenizers' tokens differ in size


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    seed: int
    params: int
    tokens: int
    tokens_per_s: float
    bytes_per_token: float
    """Of the training data, from its manifest: turns tokens/s into bytes/s."""
    bpb: dict[str, float | None]
    curve: list[tuple[float, float]] = field(default_factory=list)
    """(minutes, val bits/byte) of the validations during training (a slice of val)."""

    @property
    def key(self) -> str:
        """The config without its seed: runs with the same key are one candidate."""
        config = json.loads(json.dumps(self.config))
        config["train"].pop("seed", None)
        return json.dumps(config, sort_keys=True)

    @property
    def bytes_per_s(self) -> float:
        return self.tokens_per_s * self.bytes_per_token


def read_run(path: Path) -> Run | None:
    run = RunDir(path)
    if not run.config.is_file() or not (run.path / "eval.json").is_file():
        return None
    s = summarize(run)
    results = run.read_eval_results()
    bpb: dict[str, float | None] = {}
    for name in SETS:
        found = [r for k, r in results.items() if k == name or k.endswith(f"-{name}:test")]
        bpb[name] = found[0]["bits_per_byte"] if found else None
    manifest = json.loads((Path(s["config"]["data"]["path"]) / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    curve = [(r["elapsed_s"] / 60, r["val_bpb"]) for r in run.read_metrics()
             if r.get("kind") == "val" and r.get("val_bpb") is not None]  # fmt: skip
    return Run(
        path,
        s["config"],
        s["config"]["train"]["seed"],
        s["params"],
        s["tokens"],
        s["tokens_per_s"],
        train["text_bytes"] / train["tokens"],
        bpb,
        curve,
    )


def read_runs(root: Path) -> list[Run]:
    runs = [read_run(p.parent) for p in sorted(root.glob("*/*/config.yaml"))]
    return [r for r in runs if r is not None]


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def differences(run: Run, base: dict[str, Any]) -> list[str]:
    """The settings in which a run's config differs from `base`, seed aside."""
    parts = []
    for section, fields in run.config.items():
        for k, v in fields.items():
            if section == "train" and k == "seed":
                continue
            if base.get(section, {}).get(k) != v:
                parts.append(f"{section}.{k}={v}")
    return parts


def describe(run: Run, centres: dict[str, dict[str, Any]]) -> str:
    """What a run changes in the nearest other centre (the fewest differences)."""
    if run.path.name in ROOTS:
        return "(a centre)"
    others = ((n, differences(run, c)) for n, c in centres.items() if n != run.path.name)
    name, parts = min(others, key=lambda item: len(item[1]))
    return f"{name}: " + ", ".join(parts)


def search_table(rows: list[Run], centres: dict[str, dict[str, Any]]) -> str:
    """Search runs (seed 1337), best val first, each with what it changes in its centre."""
    rows = sorted(rows, key=lambda r: r.bpb["val"] if r.bpb["val"] is not None else 99)
    lines = [
        "| run | differs from (run: settings) | params | tokens/s | kB/s | tokens | val | test | "
        "shakespeare | bible |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.path.name} | {describe(r, centres)} | {r.params / 1e6:.1f}M | "
            f"{r.tokens_per_s:,.0f} | {r.bytes_per_s / 1e3:.1f} | {r.tokens / 1e6:.2f}M | "
            + " | ".join(fmt(r.bpb[s]) for s in SETS)
            + " |"
        )
    return "\n".join(lines)


def finals(runs: list[Run]) -> dict[int, dict[str, list[Run]]]:
    """Budget -> {'baseline': runs, 'recipe': runs}: each final's runs over all its seeds."""
    by_key: dict[str, list[Run]] = {}
    for r in runs:
        by_key.setdefault(r.key, []).append(r)
    found: dict[int, dict[str, list[Run]]] = {}
    for minutes, folder in FINALS.items():
        for r in runs:
            if r.path.parent.name == folder:
                role = r.path.name.split("_")[0]
                group = sorted(by_key[r.key], key=lambda x: x.seed, reverse=True)
                found.setdefault(minutes, {})[role] = group
    return found


def finals_table(found: dict[int, dict[str, list[Run]]]) -> str:
    lines = [
        "| budget | recipe | seeds | params | tokens/s | kB/s | val | test | shakespeare | bible |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for minutes, roles in sorted(found.items()):
        medians = {}
        for role in ("baseline", "recipe"):
            group = roles.get(role, [])
            if not group:
                continue
            medians[role] = {s: median([r.bpb[s] for r in group]) for s in SETS}
            per_seed = [
                " / ".join(fmt(r.bpb[s]) for r in group) + f" → **{fmt(medians[role][s])}**"
                if len(group) > 1 else fmt(medians[role][s])
                for s in SETS
            ]  # fmt: skip
            tps = median([r.tokens_per_s for r in group])
            bps = median([r.bytes_per_s for r in group])
            lines.append(
                f"| {minutes} min | {role} | {', '.join(str(r.seed) for r in group)} | "
                f"{group[0].params / 1e6:.1f}M | {tps:,.0f} | {bps / 1e3:.1f} | "
                + " | ".join(per_seed)
                + " |"
            )
        if len(medians) == 2:
            change = []
            for s in SETS:
                b, w = medians["baseline"][s], medians["recipe"][s]
                change.append(f"**{100 * (w - b) / b:+.1f}%**" if b and w else "-")
            lines.append(f"| {minutes} min | change | | | | | " + " | ".join(change) + " |")
    return "\n".join(lines)


def plot_search(runs: list[Run], out: Path) -> None:
    rows = [r for r in runs if r.path.parent.name == "5min" and r.curve]
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=90)
    for r in sorted(rows, key=lambda r: r.path.name):
        xs, ys = zip(*r.curve, strict=True)
        style = "--" if r.path.name.startswith("baseline") else "-"
        ax.plot(xs, ys, style, label=r.path.name, linewidth=1.3)
    ax.set(xlabel="wall time (minutes, validation included)", ylabel=SLICE,
           title="5-minute search on the 2-core CPU (dashed: the baseline's tuning)")  # fmt: skip
    ax.set_ylim(top=min(2.4, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_finals(found: dict[int, dict[str, list[Run]]], out: Path) -> None:
    fig, axes = plt.subplots(1, len(found) or 1, figsize=(11, 4.8), dpi=90, squeeze=False)
    for ax, (minutes, roles) in zip(axes[0], sorted(found.items()), strict=False):
        for role, colour in (("baseline", "tab:gray"), ("recipe", "tab:blue")):
            for r in roles.get(role, []):
                if r.curve:
                    xs, ys = zip(*r.curve, strict=True)
                    ax.plot(xs, ys, color=colour, alpha=0.9 if r.seed == 1337 else 0.5,
                            label=f"{role}, seed {r.seed}")  # fmt: skip
        ax.set(title=f"{minutes}-minute budget", xlabel="wall time (minutes)", ylabel=SLICE)
        ax.set_ylim(top=min(2.4, ax.get_ylim()[1]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_ood(runs: list[Run], out: Path) -> None:
    """Out-of-domain against in-domain bits per byte, every run: does one follow the other?"""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=90)
    for ax, name in zip(axes, ("shakespeare", "bible"), strict=True):
        for r in runs:
            if r.bpb["val"] is None or r.bpb[name] is None:
                continue
            role = "baseline" if r.path.name.startswith("baseline") else "recipe"
            minutes = r.config["train"]["max_minutes"]
            ax.scatter(r.bpb["val"], r.bpb[name], marker="o" if minutes <= 5 else "s",
                       color="tab:gray" if role == "baseline" else "tab:blue")  # fmt: skip
            ax.annotate(r.path.name, (r.bpb["val"], r.bpb[name]), fontsize=6, alpha=0.7)
        ax.set(xlabel="val bits per byte (in domain)", ylabel=f"{name} bits per byte",
               title=f"{name} (out of domain) against val")  # fmt: skip
        ax.grid(alpha=0.3)
    fig.suptitle("grey: reference architecture, blue: the search's; circle 5 min, square 30 min")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def ood_fit(runs: list[Run], found: dict[int, dict[str, list[Run]]]) -> str:
    """How out-of-domain bits per byte follow val across the 5-minute runs: a least-squares
    line per set, and the val gain it would take to reach the target's -5% on that set."""
    rows = [r for r in runs if r.config["train"]["max_minutes"] <= 5]
    baseline = found.get(5, {}).get("baseline", [])
    lines = [
        f"Least-squares lines over the {len(rows)} five-minute runs (every seed):\n",
        "| set | slope (bits/byte per bit/byte of val) | correlation | baseline (5 min) | "
        "−5% of it | val gain the line needs for it |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("test", "shakespeare", "bible"):
        pairs = [(r.bpb["val"], r.bpb[name]) for r in rows
                 if r.bpb["val"] is not None and r.bpb[name] is not None]  # fmt: skip
        if len(pairs) < 3:
            continue
        xs, ys = zip(*pairs, strict=True)
        slope, _ = np.polyfit(xs, ys, 1)
        corr = float(np.corrcoef(xs, ys)[0, 1])
        base = median([r.bpb[name] for r in baseline])
        need = f"{0.05 * base / slope:.2f}" if base and slope > 0 else "-"
        lines.append(f"| {name} | {slope:.2f} | {corr:.2f} | {fmt(base)} | "
                     f"{fmt(0.05 * base if base else None)} | {need} |")  # fmt: skip
    return "\n".join(lines)


def samples(found: dict[int, dict[str, list[Run]]]) -> str:
    """The same prompts and sampling seed for the baseline and the recipe at each budget."""
    from tinylm.inference import Sampling, complete, load_for_inference

    sampling = Sampling(max_new_tokens=64, temperature=0.8, top_k=50, top_p=0.95, seed=0)
    parts = [
        f"Sampling: temperature {sampling.temperature}, top-k {sampling.top_k}, top-p "
        f"{sampling.top_p}, seed {sampling.seed}, up to {sampling.max_new_tokens} tokens, cut "
        f"at {SAMPLE_CHARS} characters; the seed-1337 run of each.\n"
    ]
    for minutes, roles in sorted(found.items()):
        for role in ("baseline", "recipe"):
            group = [r for r in roles.get(role, []) if r.seed == 1337]
            if not group:
                continue
            loaded = load_for_inference(group[0].path, "cpu")
            texts = complete(loaded, list(PROMPTS), sampling)
            parts.append(f"**{minutes} min, {role}** (`{group[0].path}`)\n")
            for prompt, text in zip(PROMPTS, texts, strict=True):
                parts.append("> " + _cut(text, len(prompt)).replace("\n", " ⏎ ") + "\n")
    return "\n".join(parts)


def _cut(text: str, prompt_chars: int) -> str:
    end = prompt_chars + SAMPLE_CHARS
    if len(text) <= end:
        return text.rstrip()
    space = text.rfind(" ", 0, end)
    return text[: space if space > prompt_chars else end].rstrip() + " …"


def write_csv(runs: list[Run], out: Path) -> None:
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "seed", "params", "tokens", "tokens_per_s", "bytes_per_s",
                    *[f"{s}_bpb" for s in SETS]])  # fmt: skip
        for r in runs:
            w.writerow([f"{r.path.parent.name}/{r.path.name}", r.seed, r.params, r.tokens,
                        round(r.tokens_per_s, 1), round(r.bytes_per_s, 1),
                        *[fmt(r.bpb[s], ".5f") for s in SETS]])  # fmt: skip


def fill(doc: str, name: str, body: str) -> str:
    """Replace the generated block `name` of the document (the markers stay)."""
    pattern = re.compile(rf"(<!-- recipe:{name} -->\n)(?:.*?\n)?(<!-- /recipe:{name} -->)", re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{DOC}: no block <!-- recipe:{name} --> ... <!-- /recipe:{name} -->")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/recipe"))
    parser.add_argument("--no-samples", action="store_true", help="keep the samples block")
    args = parser.parse_args()
    runs = read_runs(args.runs)
    if not runs:
        raise SystemExit(f"{args.runs}: no evaluated runs; run the sweeps in {DOC} first")
    # Each search run is described by what it changes in the nearest of these runs.
    centres = {name: read_yaml(args.runs / "5min" / name / "config.yaml")
               for name in (*ROOTS, "lr-half", "batch-32")}  # fmt: skip
    found = finals(runs)
    doc = DOC.read_text(encoding="utf-8")
    search = [r for r in runs if r.path.parent.name == "5min"]
    doc = fill(doc, "search", search_table(search, centres))
    doc = fill(doc, "finals", finals_table(found))
    doc = fill(doc, "ood", ood_fit(runs, found))
    if not args.no_samples:
        doc = fill(doc, "samples", samples(found))
    DOC.write_text(doc, encoding="utf-8")
    plot_search(runs, HERE / "recipe-search-5min.png")
    plot_finals(found, HERE / "recipe-finals.png")
    plot_ood(runs, HERE / "recipe-ood.png")
    write_csv(runs, HERE / "recipe.csv")
    print(f"wrote {DOC}, {HERE / 'recipe.csv'} and the plots from {len(runs)} runs")


if __name__ == "__main__":
    main()
