"""Shared fixtures: a real prepared dataset (builtin:wiki, GPT-2 BPE) and one tiny trained run."""

from __future__ import annotations

import os
from pathlib import Path

# Before torch loads OpenMP, as tinylm/__init__.py does for the CLI: idle threads sleep
# instead of spinning, which keeps tiny-model tests fast on a busy machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from tinylm.config import ModelConfig
from tinylm.data.prepare import PrepareOptions, prepare

# A model small enough to train in seconds on 2 cores, on the real GPT-2 vocabulary.
TINY_OVERRIDES = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "model.dropout=0.0",
    "train.batch_size=8",
    "train.max_steps=30",
    "train.eval_interval=10",
    "train.eval_batches=2",
    "optim.lr=3e-3",
]


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture
def small_model_config() -> ModelConfig:
    """A byte-sized vocabulary: for tests of the model and loss that need no tokenizer."""
    return ModelConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)


@pytest.fixture(scope="session")
def wiki_data(tmp_path_factory) -> Path:
    """builtin:wiki prepared with the real GPT-2 tokenizer (about 1 s)."""
    out = tmp_path_factory.mktemp("data") / "wiki"
    prepare(PrepareOptions(sources=["builtin:wiki"], out=out))
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, wiki_data) -> Path:
    """A finished tiny training run through the real CLI."""
    from tinylm.cli import main

    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", f"data.path={wiki_data}", *TINY_OVERRIDES, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def long_run(tmp_path_factory, wiki_data) -> Path:
    """The tiny model with a 256-token context after one step: requests that run long
    enough (~250 decode steps) to be queued behind, cancelled or aborted mid-stream."""
    from tinylm.cli import main

    out = tmp_path_factory.mktemp("runs") / "long"
    overrides = [o for o in TINY_OVERRIDES if not o.startswith(("model.block_size", "train.max"))]
    settings = [*overrides, "model.block_size=256", "train.max_steps=1", "train.batch_size=2"]
    assert main(["train", f"data.path={wiki_data}", *settings, "--out", str(out)]) == 0
    return out


# One small trained run per model family, for the runtime exports (GGUF, ONNX): the tiny
# model with a 64-token context, so a short prompt and 32 greedy tokens fit the window.
FAMILY_OVERRIDES = {
    "gpt2": [],  # the reference model's components: learned positions, LayerNorm, GELU
    "llama": ["model.positions=rope", "model.norm=rmsnorm", "model.activation=swiglu",
              "model.bias=false", "model.tie_embeddings=true"],
    "qwen3": ["model.positions=rope", "model.norm=rmsnorm", "model.activation=swiglu",
              "model.bias=false", "model.qk_norm=true", "model.n_kv_head=1"],
}  # fmt: skip


@pytest.fixture(scope="session")
def family_run(tmp_path_factory, wiki_data):
    """family_run('gpt2' | 'llama' | 'qwen3', data=wiki_data) -> a finished run (trained once
    per family and dataset per session, through the real CLI)."""
    from tinylm.cli import main

    made: dict[tuple[str, Path], Path] = {}

    def make(family: str, data: Path = wiki_data) -> Path:
        if (family, data) not in made:
            out = tmp_path_factory.mktemp("runs") / family
            settings = [o for o in TINY_OVERRIDES if not o.startswith("model.block_size")]
            settings += ["model.block_size=64", *FAMILY_OVERRIDES[family]]
            assert main(["train", f"data.path={data}", *settings, "--out", str(out)]) == 0
            made[family, data] = out
        return made[family, data]

    return make
