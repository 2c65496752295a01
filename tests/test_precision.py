"""Mixed precision: bf16 autocast trains like fp32; bad choices are one clear error."""

import pytest
import torch

from tinylm.config import load_config
from tinylm.errors import TinyLMError
from tinylm.loss import chunked_next_token_loss
from tinylm.model import GPT
from tinylm.precision import autocast, grad_scaler, resolve_precision
from tinylm.training.optim import build_optimizer

CPU = torch.device("cpu")


def train_steps(config, precision: str, steps: int) -> list[float]:
    """The trainer's step (autocast, chunked loss, scaler, clip, fused AdamW) on fixed data."""
    torch.set_num_threads(1)  # tiny ops: a second thread only waits (conftest resets it)
    torch.manual_seed(0)
    model = GPT(config.model)
    opt = build_optimizer(model, config.optim)
    scaler = grad_scaler(precision, CPU)
    data = torch.Generator().manual_seed(1)
    sequence = torch.randint(0, config.model.vocab_size, (8, 32), generator=data)
    losses = []
    for _ in range(steps):
        with autocast(precision, CPU):
            loss = chunked_next_token_loss(model, sequence)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    return losses


def test_bf16_training_stays_within_tolerance_of_fp32():
    config = load_config(
        None,
        ["model.vocab_size=256", "model.n_embd=32", "model.block_size=32", "model.dropout=0"],
    )
    fp32 = train_steps(config, "fp32", 15)
    bf16 = train_steps(config, "bf16", 15)
    assert fp32[-1] < fp32[0] - 0.5  # it learns (memorises the fixed batch) ...
    for a, b in zip(fp32, bf16, strict=True):  # ... and bf16 follows the same curve
        assert abs(a - b) < 0.02 * a + 0.02, (fp32, bf16)


def test_auto_precision_and_its_errors():
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("auto", CPU) in ("bf16", "fp32")
    with pytest.raises(TinyLMError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(TinyLMError, match="train.precision='fp8'"):
        load_config(None, ["train.precision=fp8"])


def test_trainer_runs_in_bf16_and_records_it(wiki_data, tmp_path, capsys):
    from conftest import TINY_OVERRIDES

    from tinylm.cli import main

    out = tmp_path / "run"
    args = ["train", f"data.path={wiki_data}", *TINY_OVERRIDES, "train.max_steps=5"]
    assert main([*args, "train.precision=bf16", "--out", str(out)]) == 0
    assert "(bf16)" in capsys.readouterr().err
    assert "precision: bf16" in (out / "config.yaml").read_text()


def test_compile_without_a_cpp_compiler_is_one_clear_error(monkeypatch):
    from torch._inductor import config as inductor

    from tinylm.precision import maybe_compile

    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/c++",))
    with pytest.raises(TinyLMError, match="needs a C\\+\\+ compiler"):
        maybe_compile(torch.nn.Linear(2, 2), True)
