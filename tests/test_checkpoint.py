"""Safe checkpoints: atomic writes that survive a crash, refusal of foreign checkpoints,
pruning, and no pickle anywhere."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES

from tinylm.cli import main
from tinylm.config import load_config
from tinylm.errors import TinyLMError
from tinylm.model import GPT
from tinylm.training.checkpoint import (
    CheckpointStore,
    load_checkpoint,
    load_optimizer_tensors,
    optimizer_tensors,
)
from tinylm.training.optim import build_optimizer

CRASH_MID_WRITE = """
import os, signal, sys
from pathlib import Path
import safetensors.torch, torch
from tinylm.config import load_config
from tinylm.model import GPT
from tinylm.training.checkpoint import CheckpointStore

cfg = load_config(
    None, ["model.vocab_size=128", "model.n_embd=32", "model.n_head=2", "model.n_layer=1"]
)
torch.manual_seed(0)
model = GPT(cfg.model)
store = CheckpointStore(Path(sys.argv[1]), keep=2)
store.save(1, model, cfg, {"step": 1}, {"x": torch.zeros(3)})

def half_then_die(tensors, filename, *args, **kwargs):
    # Write half of the file, as a machine that loses power mid-write would, then die.
    data = safetensors.torch.save(tensors)
    with open(filename, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

safetensors.torch.save_file = half_then_die
with torch.no_grad():
    for p in model.parameters():
        p.add_(1.0)
store.save(2, model, cfg, {"step": 2}, {"x": torch.ones(3)})
"""


def test_crash_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    root = tmp_path / "checkpoints"
    result = subprocess.run([sys.executable, "-c", CRASH_MID_WRITE, str(root)])
    assert result.returncode == -9  # killed in the middle of writing step 2

    partial = [p.name for p in root.iterdir() if p.name.startswith(".")]
    assert partial, "the crash should have left a half-written temporary directory"
    ckpt = load_checkpoint(root / "latest")
    assert ckpt.meta["step"] == 1
    torch.manual_seed(0)
    fresh = GPT(ckpt.config.model)
    pairs = zip(fresh.state_dict().values(), ckpt.model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    CheckpointStore(root, keep=2).clean_partial()  # the next run tidies up
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000001"]


def test_store_keeps_the_last_k_and_the_best(tmp_path):
    cfg = load_config(
        None, ["model.vocab_size=128", "model.n_embd=32", "model.n_head=2", "model.n_layer=1"]
    )
    model = GPT(cfg.model)
    store = CheckpointStore(tmp_path, keep=2)
    for step in range(1, 6):
        path = store.save(step, model, cfg, {"step": step}, {"x": torch.zeros(1)})
        if step == 2:
            store.point("best", path)
        store.prune()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best", "latest", "step-00000002", "step-00000004", "step-00000005"]
    assert load_checkpoint(tmp_path / "best").meta["step"] == 2
    assert load_checkpoint(tmp_path / "latest").meta["step"] == 5


def test_optimizer_state_round_trips_by_parameter_name():
    cfg = load_config(
        None, ["model.vocab_size=128", "model.n_embd=32", "model.n_head=2", "model.n_layer=1"]
    )
    model = GPT(cfg.model)
    opt = build_optimizer(model, cfg.optim)
    model(torch.randint(0, 100, (2, 8))).sum().backward()
    opt.step()
    saved = optimizer_tensors(model, opt)
    assert "optim.wte.weight.exp_avg" in saved and "optim.ln_f.bias.step" in saved
    other = build_optimizer(model, cfg.optim)
    load_optimizer_tensors(Path("x"), model, other, saved)
    before, after = opt.state_dict()["state"], other.state_dict()["state"]
    for a, b in zip(before.values(), after.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_architecture(tiny_run, capsys):
    before = (tiny_run / "metrics.jsonl").read_bytes()
    code = main(["train", "model.n_embd=64", "--out", str(tiny_run), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert "another architecture: model.n_embd=32 (config: 64)" in err
    assert (tiny_run / "metrics.jsonl").read_bytes() == before


def test_resume_refuses_another_tokenizer(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    meta_file = run / "checkpoints" / "latest" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["tokenizer"] = {"name": "other-bpe", "fingerprint": "0" * 64}
    meta_file.write_text(json.dumps(meta))
    code = main(["train", "train.max_steps=40", "--out", str(run), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert "trained with tokenizer 'other-bpe'" in err and "'gpt2'" in err


def test_weights_of_another_shape_are_refused(tiny_run, tmp_path):
    cfg = load_config(None, [*TINY_OVERRIDES, "model.vocab_size=50257", "model.n_embd=64"])
    from tinylm.training.checkpoint import load_weights

    with pytest.raises(TinyLMError, match="do not fit"):
        load_weights(tiny_run / "checkpoints" / "latest", GPT(cfg.model))


def test_every_torch_load_is_weights_only():
    """No pickle: any torch.load in the package must pass weights_only=True."""
    src = Path(__file__).parents[1] / "src" / "tinylm"
    for file in src.rglob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", file.read_text()):
            assert "weights_only=True" in call, f"{file}: {call}"


def test_resume_refuses_another_batch_size(tiny_run, capsys):
    """The loader's position is counted in batches: it only holds for the same batch size."""
    code = main(["train", "train.batch_size=4", "--out", str(tiny_run), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "train.batch_size=8 (config: 4)" in err, err
