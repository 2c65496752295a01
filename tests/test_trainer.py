import json
import math

import pytest
import torch
from conftest import TINY_OVERRIDES

from tinylm.config import MODEL_PRESETS, load_config
from tinylm.errors import TinyLMError
from tinylm.model import GPT
from tinylm.training.checkpoint import load_checkpoint, save_checkpoint
from tinylm.training.optim import build_optimizer
from tinylm.training.trainer import Trainer, train


def tiny_config(wiki_data, *extra):
    """The tiny model; TensorBoard off (its import costs a second) unless a test turns it on."""
    return load_config(
        None, [f"data.path={wiki_data}", *TINY_OVERRIDES, "train.tensorboard=false", *extra]
    )


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_same_seed_same_metrics(wiki_data, tmp_path):
    # One thread: two-thread MKL reductions can differ in the last bit on a loaded machine.
    cfg = tiny_config(wiki_data, "train.max_steps=6", "model.dropout=0.1", "train.num_threads=1")
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
    # The last step started before the 3 s deadline (which may pass during that step or its
    # validation), and nothing more ran after it.
    assert records[-2]["elapsed_s"] < 3.0 + 2 and result.train_seconds < 3.0 + 2
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


# --- gradient accumulation, budgets ------------------------------------------------------


def test_accumulating_two_half_batches_equals_one_full_batch(wiki_data, tmp_path, monkeypatch):
    """Batch 8 vs 2 x 4: the same 8 blocks (the epoch order does not depend on batch size),
    so the gradient AdamW receives is the same up to float rounding."""
    grads = []
    real_step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        grads.append([p.grad.clone() for g in self.param_groups for p in g["params"]])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    # fp32: bf16 autocast rounds the two micro-batches' sums differently from one batch's.
    common = [
        "train.max_steps=1",
        "train.eval_interval=0",
        "data.val_split=",
        "train.precision=fp32",
    ]
    full = train(tiny_config(wiki_data, *common, "train.batch_size=8"), tmp_path / "full")
    half = train(tiny_config(wiki_data, *common, "train.batch_size=4", "train.grad_accum=2"),
                 tmp_path / "accum")  # fmt: skip
    assert full.tokens == half.tokens == 8 * 32
    assert full.train_loss == pytest.approx(half.train_loss, rel=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(*grads, strict=True))


def test_token_budget_and_lr_schedule_in_the_metrics(wiki_data, tmp_path):
    cfg = tiny_config(wiki_data, "train.max_steps=0", "train.epochs=10",
                      "train.max_tokens=2560", "optim.schedule=wsd", "optim.warmup=2",
                      "optim.decay_fraction=0.5", "train.eval_interval=0",
                      "train.tensorboard=true")  # fmt: skip
    result = train(cfg, tmp_path / "run")
    train_records = [r for r in metrics(tmp_path / "run") if r["kind"] == "train"]
    assert result.steps == 10 and result.tokens == 2560  # 256 tokens per step
    lrs = [r["lr"] for r in train_records]
    peak = 3e-3
    assert lrs[:2] == pytest.approx([peak / 2, peak])  # warmup over 2 steps
    assert lrs[2:5] == [peak] * 3  # stable until step 5 (half of 10)
    assert lrs[-1] == pytest.approx(peak * 0.1)  # decayed to min_lr_ratio * lr
    assert (tmp_path / "run" / "tensorboard").is_dir()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx(lrs)
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 11))


# --- validation, early stopping, best checkpoint ------------------------------------------


def test_early_stopping_on_a_rising_val_curve(wiki_data, tmp_path):
    """A warmup towards an absurd lr (3.0, no clipping) makes the model diverge: validation
    loss improves at first, then rises; patience 3 stops the run 3 validations after the
    best, and `best` holds the checkpoint of the lowest val loss."""
    cfg = tiny_config(wiki_data, "train.max_steps=60", "optim.lr=3", "optim.grad_clip=0",
                      "optim.warmup=40", "train.eval_interval=3", "train.eval_batches=1",
                      "train.early_stop_patience=3", "train.checkpoint_interval=0",
                      "train.batch_size=4")  # fmt: skip
    result = train(cfg, tmp_path / "run")
    val = [r for r in metrics(tmp_path / "run") if r["kind"] == "val"]
    losses = [r["val_loss"] for r in val]
    best = losses.index(min(losses))
    assert result.stop_reason == "early_stop" and result.steps < 60
    assert len(val) == best + 1 + 3  # stopped at the third validation without improvement
    assert all(loss > losses[best] for loss in losses[best + 1 :])  # the curve rose
    best_ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "best")
    assert best_ckpt.meta["step"] == val[best]["step"]
    assert best_ckpt.meta["val"]["loss"] == losses[best]
    assert load_checkpoint(tmp_path / "run").meta["step"] == result.steps


# --- non-finite loss or gradient -----------------------------------------------------------


def poison(monkeypatch, nan_loss_steps, inf_grad_steps=()):
    """Make chosen steps' loss NaN, or their gradient infinite (1-based step numbers)."""
    real = Trainer._micro_batch_loss

    def poisoned(self, batch):
        loss = real(self, batch)
        step = self.step + 1
        if step in inf_grad_steps:
            loss.register_hook(lambda g: g * math.inf)
        return loss * math.nan if step in nan_loss_steps else loss

    monkeypatch.setattr(Trainer, "_micro_batch_loss", poisoned)


def test_non_finite_steps_are_skipped_and_counted(wiki_data, tmp_path, monkeypatch):
    poison(monkeypatch, nan_loss_steps={3}, inf_grad_steps={5})
    cfg = tiny_config(wiki_data, "train.max_steps=8", "train.eval_interval=0", "train.batch_size=4")
    result = train(cfg, tmp_path / "run")
    records = {r["step"]: r for r in metrics(tmp_path / "run") if r["kind"] == "train"}
    assert records[3]["loss"] is None and records[3]["skipped_steps"] == 1
    assert records[5]["grad_norm"] is None and records[5]["skipped_steps"] == 2
    assert records[8]["skipped_steps"] == 2 and result.steps == 8
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.meta["trainer"]["skipped_steps"] == 2
    assert all(torch.isfinite(p).all() for p in ckpt.model.parameters())


def test_numbers_are_read_at_log_steps_and_bad_steps_still_recorded(
    wiki_data, tmp_path, monkeypatch
):
    """With log_interval 4 the loss is read from the device every 4th step: records at 4
    and 8, plus one for the poisoned step 3 (skipped on the device; on a CPU its flag is
    read at once, so it is counted at step 3)."""
    reads = []
    real = Trainer._read_steps

    def counted(self, through=None):
        reads.append(self.step)
        return real(self, through)

    monkeypatch.setattr(Trainer, "_read_steps", counted)
    poison(monkeypatch, nan_loss_steps={3})
    cfg = tiny_config(wiki_data, "train.max_steps=8", "train.eval_interval=0",
                      "train.batch_size=4", "train.log_interval=4")  # fmt: skip
    train(cfg, tmp_path / "run")
    records = [r for r in metrics(tmp_path / "run") if r["kind"] == "train"]
    assert [r["step"] for r in records] == [3, 4, 8]
    assert records[0]["loss"] is None and records[0]["skipped_steps"] == 1
    assert records[1]["skipped_steps"] == records[2]["skipped_steps"] == 1
    assert set(reads[: reads.index(8)]) == {3, 4}  # no read between log steps but the bad one
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.meta["trainer"]["skipped_steps"] == 1
    assert len(ckpt.meta["trainer"]["recent_losses"]) == 7  # every finite step's loss


def test_too_many_non_finite_steps_stop_with_a_usable_checkpoint(wiki_data, tmp_path, monkeypatch):
    poison(monkeypatch, nan_loss_steps=set(range(4, 100)))
    cfg = tiny_config(
        wiki_data, "train.max_steps=30", "train.max_skipped_steps=3", "train.batch_size=4"
    )
    with pytest.raises(TinyLMError, match=r"stopped at step 6: 3 steps had a non-finite"):
        train(cfg, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run")  # the run dir stays, with its last checkpoint
    assert ckpt.meta["step"] == 6 and ckpt.meta["trainer"]["skipped_steps"] == 3
    assert all(torch.isfinite(p).all() for p in ckpt.model.parameters())
    idx = torch.randint(0, 50257, (1, 16))
    assert torch.isfinite(ckpt.model.eval()(idx)).all()


def test_max_skipped_steps_stops_at_its_limit_between_log_steps(wiki_data, tmp_path, monkeypatch):
    """log_interval 10 does not let more bad steps through than max_skipped_steps (a CPU
    reads each step's finite flag at once): steps 4, 5, 6 bad -> stop at 6, not at 10."""
    poison(monkeypatch, nan_loss_steps=set(range(4, 100)))
    cfg = tiny_config(wiki_data, "train.max_steps=30", "train.max_skipped_steps=3",
                      "train.batch_size=4", "train.log_interval=10",
                      "train.eval_interval=0")  # fmt: skip
    with pytest.raises(TinyLMError, match=r"stopped at step 6: 3 steps had a non-finite"):
        train(cfg, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.meta["step"] == 6 and ckpt.meta["trainer"]["skipped_steps"] == 3
    records = [(r["step"], r["skipped_steps"]) for r in metrics(tmp_path / "run")]
    assert records == [(4, 1), (5, 2), (6, 3)]


# --- plot --------------------------------------------------------------------------------


def test_plot_draws_several_runs(tiny_run, tmp_path, capsys):
    from tinylm.cli import main

    out = tmp_path / "curves.png"
    assert main(["plot", str(tiny_run), str(tiny_run), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
