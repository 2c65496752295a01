"""The model card (README.md) of an export, written from the run directory's own files.

Architecture and parameter count come from the checkpoint; data from the dataset's
manifest.json (sources, their licenses, split sizes); the training budget from the
resolved config and the checkpoint's meta.json; val/test loss and perplexity from
RUN/eval.json when `tinylm eval` has been run. Facts that are not on disk are said to be
missing, never guessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinylm import __version__
from tinylm.atomic import write_atomic
from tinylm.interop.family import Family
from tinylm.rundir import RECENT_STEPS, RunDir
from tinylm.training.checkpoint import Checkpoint


def write_model_card(
    ckpt: Checkpoint, path: Path, tokenizer_kind: str, max_diff: float, family: Family
) -> None:
    write_atomic(path, model_card(ckpt, tokenizer_kind, max_diff, family))


def model_card(ckpt: Checkpoint, tokenizer_kind: str, max_diff: float, family: Family) -> str:
    run = RunDir.of_checkpoint(ckpt.path)
    name = run.path.name if run else ckpt.path.name
    m, meta = ckpt.config.model, ckpt.meta
    sections = [
        "---\nlibrary_name: transformers\npipeline_tag: text-generation\n"
        f"tags: [tinylm, {family.model_type}, text-generation]\n---\n",
        f"# {name}\n\nA small language model trained from scratch with tinylm "
        f"{meta.get('versions', {}).get('tinylm', '')}".rstrip()
        + f", exported to the transformers format (`{family.architecture}`: "
        f"{family.description}).\n",
        _model_section(ckpt, tokenizer_kind, family),
        _data_section(Path(ckpt.config.data.path), meta),
        _training_section(ckpt),
        _evaluation_section(run, meta.get("step")),
        _usage_section(m.block_size),
        _limitations_section(ckpt),
        f"## Export check\n\nThe logits of this directory, loaded with "
        f"`AutoModelForCausalLM`, equal tinylm's to within {max_diff:.1e} (max absolute "
        f"difference, fp32, 2 × {m.block_size} random tokens). Exported by tinylm "
        f"{__version__} from `{ckpt.path}`.\n",
    ]
    return "\n".join(sections)


def _model_section(ckpt: Checkpoint, tokenizer_kind: str, family: Family) -> str:
    m = ckpt.config.model
    params = ckpt.model.num_parameters()
    name = ckpt.meta["tokenizer"]["name"]
    head = "tied to the token embedding" if m.tie_embeddings else "separate (untied)"
    rows = [
        *family.card_rows(m),
        ("parameters", f"{params:,}"),
        ("output layer", head),
        ("context", f"{m.block_size} tokens"),
        ("vocabulary", f"{m.vocab_size:,} ({name} tokenizer"
         + (f", from {tokenizer_kind})" if tokenizer_kind != name else ")")),
        ("dropout (training)", f"{m.dropout}"),
    ]  # fmt: skip
    return "## Model\n\n" + _table(rows)


def _data_section(dataset: Path, meta: dict[str, Any]) -> str:
    file = dataset / "manifest.json"
    if not file.is_file():
        return (
            f"## Data\n\nThe dataset manifest (`{file}`) was not found when exporting, so the "
            "training data and its license are not recorded here.\n"
        )
    manifest = json.loads(file.read_text())
    tok = manifest["tokenizer"]
    lines = [
        f"## Data\n\nDataset `{dataset.name}`, tokenized with {tok['name']} "
        f"({tok['vocab_size']:,} tokens)."
    ]
    lines.append("\n| source | documents | description | license |\n|---|---|---|---|")
    for s in manifest.get("sources", []):
        lines.append(
            f"| `{s['spec']}` | {s['documents']:,} | {s.get('description', 'user-supplied files')}"
            f" | {s.get('license', 'not recorded: check the license of your files')} |"
        )
    lines.append("\n| split | documents | tokens |\n|---|---|---|")
    for split, info in manifest.get("splits", {}).items():
        lines.append(f"| {split} | {info['documents']:,} | {info['tokens']:,} |")
    lines.append(
        "\nSplits are by document (a seeded hash of each text), so val and test documents "
        "were never trained on."
    )
    return "\n".join(lines) + "\n"


def _training_section(ckpt: Checkpoint) -> str:
    meta, t, o = ckpt.meta, ckpt.config.train, ckpt.config.optim
    if "imported_from" in meta and not meta.get("step"):
        return f"## Training\n\nNot trained with tinylm: imported from `{meta['imported_from']}`.\n"
    budget = ", ".join(
        f"{label} {value}"
        for label, value in (("epochs", t.epochs), ("max_steps", t.max_steps),
                             ("max_minutes", t.max_minutes))
        if value
    )  # fmt: skip
    rows = [
        ("steps", f"{meta.get('step', 0):,}"),
        ("tokens seen", f"{meta.get('tokens_seen', 0):,}"),
        ("batch", f"{t.batch_size} × {ckpt.config.model.block_size} tokens"),
        ("budget", budget or "-"),
        ("optimizer", _optimizer_facts(o)),
        ("seed", str(t.seed)),
    ]  # fmt: skip
    if meta.get("train_seconds") is not None:
        rows.append(("training time", f"{meta['train_seconds'] / 60:.1f} min"))
    if meta.get("train_loss") is not None:
        rows.append((f"train loss (last {RECENT_STEPS} steps)", f"{meta['train_loss']:.4f}"))
    if meta.get("interrupted"):
        rows.append(("note", "training was interrupted before its budget ended"))
    return "## Training\n\n" + _table(rows)


def _optimizer_facts(o: Any) -> str:
    adamw = f"AdamW, lr {o.lr:g}, weight decay {o.weight_decay:g}"
    if o.optimizer == "muon":
        adamw = (
            f"Muon on the blocks' matrices (lr {o.muon_lr:g}, momentum {o.muon_momentum:g}, "
            f"weight decay {o.muon_weight_decay:g}) and {adamw} on the rest"
        )
    return f"{adamw}, {o.schedule} schedule, gradient clip {o.grad_clip:g}"


def _evaluation_section(run: RunDir | None, step: int | None) -> str:
    results = run.read_eval_results() if run else {}
    # eval.json may hold results of an earlier checkpoint of the same run: not this model's.
    results = {k: r for k, r in results.items() if r.get("step") == step}
    if not results:
        return (
            "## Evaluation\n\nNo held-out evaluation of this checkpoint was recorded (`tinylm "
            "eval RUN` writes RUN/eval.json; run it before exporting to include val/test scores "
            "here).\n"
        )
    lines = [
        "## Evaluation\n\nWhole held-out splits, `tinylm eval` (next-token loss in nats):\n",
        "| split | tokens | loss | perplexity | bits/byte |",
        "|---|---|---|---|---|",
    ]
    for split, r in results.items():
        bpb = f"{r['bits_per_byte']:.4f}" if r.get("bits_per_byte") is not None else "-"
        lines.append(
            f"| {split} | {r['tokens']:,} | {r['loss']:.4f} | {r['perplexity']:.2f} | {bpb} |"
        )
    return "\n".join(lines) + "\n"


def _usage_section(block_size: int) -> str:
    return f"""## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/DIRECTORY")
model = AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/DIRECTORY")
ids = tokenizer("The history of", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=40)  # sampling settings: generation_config.json
print(tokenizer.decode(out[0]))
```

Prompt plus generated tokens must fit in the {block_size}-token context.
"""


def _limitations_section(ckpt: Checkpoint) -> str:
    tokens = ckpt.meta.get("tokens_seen", 0)
    seen = f"{tokens:,} tokens" if tokens else "an unrecorded amount of text"
    lines = [
        "## Intended use and limitations\n",
        "- Intended for learning, research and testing of training and evaluation pipelines. "
        "It is not intended for deployment, for decisions about people, or as a source of facts.",
        f"- A small model trained on {seen}: its text is often incoherent and, where it reads "
        "fluently, frequently wrong. It has no safety tuning or filtering.",
        "- It reproduces the style, topics and biases of its training data (see Data).",
        f"- It sees at most {ckpt.config.model.block_size} tokens of context.",
    ]
    if ckpt.meta["tokenizer"]["name"].startswith("gpt2"):
        lines.append(
            "- The GPT-2 tokenizer was made for English; other languages cost many tokens."
        )
    return "\n".join(lines) + "\n"


def _table(rows: list[tuple[str, str]]) -> str:
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"
