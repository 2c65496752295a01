import json

import pytest
import torch
from conftest import TINY_OVERRIDES

from tinylm.config import MODEL_PRESETS, load_config
from tinylm.model import GPT
from tinylm.training.checkpoint import load_checkpoint, save_checkpoint
from tinylm.training.optim import build_optimizer
from tinylm.training.trainer import train


def tiny_config(wiki_data, *extra):
    return load_config(None, [f"data.path={wiki_data}", *TINY_OVERRIDES, *extra])


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_same_seed_same_metrics(wiki_data, tmp_path):
    cfg = tiny_config(wiki_data, "train.max_steps=6", "model.dropout=0.1")
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")

    def without_timings(records):
        return [
            {k: v for k, v in r.items() if "elapsed" not in k and "per_s" not in k} for r in records
        ]

    assert without_timings(metrics(tmp_path / "a")) == without_timings(metrics(tmp_path / "b"))


def test_time_budget_stops_the_run(wiki_data, tmp_path):
    cfg = tiny_config(wiki_data, "train.max_steps=0", "train.epochs=100", "train.max_minutes=0.05")
    result = train(cfg, tmp_path / "run")
    records = metrics(tmp_path / "run")
    assert 0 < result.steps == records[-2]["step"]  # stopped long before 100 epochs
    # The last step started before the 3 s deadline and ended after it.
    assert 3.0 <= records[-2]["elapsed_s"] < 5
    assert result.val is not None  # the final validation still runs
    assert metrics(tmp_path / "run")[-1]["kind"] == "val"


def test_weight_decay_only_on_matrices():
    model = GPT(MODEL_PRESETS["seed-d128"])
    decay, no_decay = build_optimizer(model, load_config().optim).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert "wte.weight" in decayed and "lm_head.weight" in decayed
    assert "blocks.0.attn.qkv.weight" in decayed and "blocks.1.mlp.fc.weight" in decayed
    assert not any(n.endswith(".bias") or "ln" in n or n.startswith("wpe") for n in decayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("tied", [False, True])
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, tied):
    overrides = ["model.n_embd=32", "model.n_head=2", "model.vocab_size=50257"]
    cfg = load_config(None, [*overrides, f"model.tie_embeddings={tied}"])
    model = GPT(cfg.model).eval()
    meta = {"step": 3, "tokenizer": {"name": "gpt2", "fingerprint": "x"}}
    save_checkpoint(tmp_path / "ckpt", model, cfg, meta)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == cfg and loaded.meta["step"] == 3
    assert loaded.meta["versions"]["torch"] == torch.__version__
    idx = torch.randint(0, 50257, (2, 16))
    assert torch.equal(model(idx), loaded.model.eval()(idx))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
