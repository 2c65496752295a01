"""The optimizer option: Muon on the blocks' matrices + AdamW on the rest, its LRs, its
state in checkpoints (exact resume), DDP, and the FSDP2 refusal."""

import copy
import dataclasses
import json

import pytest
import torch
from conftest import TINY_OVERRIDES
from test_distributed import torchrun

from tinylm.config import ModelConfig, OptimConfig, load_config
from tinylm.errors import TinyLMError
from tinylm.loss import chunked_next_token_loss
from tinylm.model import GPT
from tinylm.training.checkpoint import load_optimizer_tensors, optimizer_tensors
from tinylm.training.optim import MuonWithAdamW, build_optimizer
from tinylm.training.trainer import train

CONFIG = ModelConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
MUON = OptimConfig(optimizer="muon", lr=3e-3, muon_lr=0.05, muon_weight_decay=0.01)


def model_and_batch(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(dataclasses.replace(CONFIG, **overrides)), torch.randint(0, 64, (4, 16))


def step(model, opt, idx):
    loss = chunked_next_token_loss(model, idx)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    model, _ = model_and_batch()
    opt = build_optimizer(model, MUON)
    assert isinstance(opt, MuonWithAdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in opt.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in opt.adamw.param_groups for p in g["params"]}
    assert muon == {f"blocks.{i}.{m}.weight" for i in range(2)
                    for m in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")}  # fmt: skip
    assert {"wte.weight", "wpe.weight", "lm_head.weight", "ln_f.weight"} <= adamw
    assert not muon & adamw and len(muon | adamw) == len(list(model.parameters()))
    # Each group's peak LR: Muon's own, AdamW's; weight decay where documented.
    assert [(g["lr"], g["lr_scale"], g["weight_decay"]) for g in opt.param_groups] == [
        (0.05, 0.05 / 3e-3, 0.01), (3e-3, 1.0, MUON.weight_decay), (3e-3, 1.0, 0.0)]  # fmt: skip


def test_step_is_torch_muon_plus_torch_adamw():
    """The combined optimizer changes nothing in either: the same updates as torch's Muon
    and AdamW stepped side by side on copies of the model."""
    model, idx = model_and_batch()
    twin = copy.deepcopy(model)
    opt = build_optimizer(model, MUON)
    blocks = [p for n, p in twin.named_parameters() if n.startswith("blocks.") and p.dim() == 2]
    others = [p for p in twin.parameters() if all(p is not b for b in blocks)]
    decay = [p for p in others if p.dim() >= 2 and p is not twin.wpe.weight]
    nodecay = [p for p in others if all(p is not d for d in decay)]
    muon = torch.optim.Muon(blocks, lr=0.05, weight_decay=0.01, momentum=0.95, nesterov=True,
                            ns_steps=5, adjust_lr_fn="original")  # fmt: skip
    adamw = torch.optim.AdamW(
        [{"params": decay, "weight_decay": MUON.weight_decay}, {"params": nodecay,
          "weight_decay": 0.0}], lr=3e-3, fused=True)  # fmt: skip
    for _ in range(3):
        step(model, opt, idx)
        loss = chunked_next_token_loss(twin, idx)
        muon.zero_grad(), adamw.zero_grad()
        loss.backward()
        muon.step(), adamw.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_muon_update_is_orthogonalised():
    """One step from rest moves a block matrix by lr * sqrt(max(1, rows/cols)) * O, O with
    singular values near 1 (five Newton-Schulz steps land most in about [0.5, 1.5]; the
    gradient's own spread far wider)."""
    model, idx = model_and_batch()
    opt = build_optimizer(model, dataclasses.replace(MUON, muon_weight_decay=0.0))
    w = model.blocks[0].mlp.fc.weight  # (128, 32): sqrt(128/32) = 2
    before = w.detach().clone()
    step(model, opt, idx)
    update = (before - w.detach()) / (0.05 * 2)
    s, g = torch.linalg.svdvals(update), torch.linalg.svdvals(w.grad)
    assert s.max() < 1.6 and s.median() > 0.6, s
    assert g.max() / g.median() > 3 * s.max() / s.median()


def test_muon_trains_faster_than_adamw_on_a_tiny_problem():
    losses = {}
    for kind in ("adamw", "muon"):
        model, idx = model_and_batch()
        opt = build_optimizer(model, dataclasses.replace(MUON, optimizer=kind))
        losses[kind] = [step(model, opt, idx) for _ in range(15)][-1]
    assert losses["muon"] < losses["adamw"]


def test_state_round_trips_by_parameter_name():
    """Saved and loaded into a fresh optimizer, Muon's momentum and AdamW's moments and step
    carry on exactly: the next steps are the same, bit for bit."""
    model, idx = model_and_batch(positions="rope", norm="rmsnorm", bias=False)
    opt = build_optimizer(model, MUON)
    for _ in range(3):
        step(model, opt, idx)
    saved = {k: v.clone() for k, v in optimizer_tensors(model, opt).items()}  # as on disk
    assert any(k.endswith(".momentum_buffer") for k in saved)
    assert any(k.endswith(".exp_avg_sq") for k in saved)
    twin = copy.deepcopy(model)
    fresh = build_optimizer(twin, MUON)
    load_optimizer_tensors(None, twin, fresh, saved)
    for _ in range(2):
        assert step(model, opt, idx) == step(twin, fresh, idx)
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters(), strict=True)
    )
    assert fresh.muon.state is fresh.state
    assert fresh.adamw.param_groups[0] is fresh.param_groups[1]


def test_muon_run_resumes_bit_exactly(wiki_data, tmp_path):
    """Through the trainer: 6 steps at once, or 3, then --resume to 6 (WSD schedule, both
    LRs moving, gradient clipping on): identical metrics."""
    args = [f"data.path={wiki_data}", *TINY_OVERRIDES, "model=modern-d128", "model.n_embd=32",
            "model.n_head=2", "model.n_layer=1", "optim.optimizer=muon", "optim.schedule=wsd",
            "optim.warmup=2", "optim.schedule_length=6", "optim.decay_fraction=0.5",
            "optim.grad_clip=0.5", "train.batch_size=4", "train.eval_interval=3",
            "train.eval_batches=1", "train.num_threads=1", "train.tensorboard=false",
            "train.checkpoint_interval=3"]  # fmt: skip
    train(load_config(None, [*args, "train.max_steps=6"]), tmp_path / "once")
    train(load_config(None, [*args, "train.max_steps=3"]), tmp_path / "split")
    train(load_config(None, [*args, "train.max_steps=6"]), tmp_path / "split", resume=True)
    once, split = records(tmp_path / "once"), records(tmp_path / "split")
    assert once == split
    lrs = [r["lr"] for r in once if r["kind"] == "train"]
    assert lrs[0] < lrs[2] and lrs[-1] < lrs[2]  # warmup, stable, decay: the schedule moved


def test_bad_optimizer_settings_are_one_line():
    with pytest.raises(TinyLMError, match="optim.optimizer='sgd'; choose one of adamw, muon"):
        load_config(None, ["optim.optimizer=sgd"])
    with pytest.raises(TinyLMError, match="optim.muon_adjust_lr='x'"):
        load_config(None, ["optim.muon_adjust_lr=x"])


def test_muon_under_ddp_follows_one_process_and_fsdp_is_refused(wiki_data, tmp_path):
    """2 ranks (gloo, CPU): Muon sees the all-reduced gradients, so the curve is the
    one-process one (to Newton-Schulz's bf16 rounding); FSDP2 is refused in one line."""
    args = [f"data.path={wiki_data}", *TINY_OVERRIDES, "optim.optimizer=muon",
            "train.batch_size=8", "train.max_steps=4", "train.eval_interval=0",
            "train.precision=fp32", "train.num_threads=1", "train.tensorboard=false"]  # fmt: skip
    train(load_config(None, args), tmp_path / "one")
    proc = torchrun(*args, "--out", tmp_path / "ddp")
    assert proc.returncode == 0, proc.stderr
    one, ddp = records(tmp_path / "one"), records(tmp_path / "ddp")
    diffs = [abs(a["loss"] - b["loss"]) for a, b in zip(one, ddp, strict=True)
             if a["kind"] == "train"]  # fmt: skip
    print(f"Muon, DDP 2 ranks vs 1 process: max |train loss diff| {max(diffs):.2e}")
    assert len(diffs) == 4 and max(diffs) < 1e-3
    proc = torchrun(*args, "train.parallel=fsdp", "--out", tmp_path / "fsdp")
    assert proc.returncode != 0
    line = "error: optim.optimizer=muon does not work with train.parallel=fsdp"
    assert proc.stderr.count(line) == 1, proc.stderr[-2000:]
    assert "build_optimizer" not in proc.stderr  # no traceback of ours (torchrun prints its own)
    assert not (tmp_path / "fsdp").exists()


def records(run):
    drop = ("elapsed_s", "tokens_per_s")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]


def test_resume_with_the_other_optimizer_is_one_line(wiki_data, tmp_path, capsys):
    from test_cli import assert_one_line_error, run_cli

    args = [f"data.path={wiki_data}", *TINY_OVERRIDES, "train.max_steps=2",
            "train.eval_interval=0", "train.tensorboard=false"]  # fmt: skip
    assert run_cli(capsys, "train", *args, "--out", tmp_path / "run")[0] == 0
    code, _, err = run_cli(capsys, "train", *args, "train.max_steps=3", "optim.optimizer=muon",
                           "--out", tmp_path / "run", "--resume")  # fmt: skip
    assert_one_line_error(code, err, "optim.optimizer=adamw (config: muon); resume with the same")
