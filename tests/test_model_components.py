"""Model components chosen by config: each one does what its field says, every combination
runs forward, generates with a KV cache exactly as without, trains and resumes bit-exactly."""

import dataclasses
import itertools
import json

import pytest
import torch
from conftest import TINY_OVERRIDES

from tinylm.config import ModelConfig, load_config
from tinylm.errors import TinyLMError
from tinylm.generate import generate_batch
from tinylm.loss import chunked_next_token_loss, next_token_loss
from tinylm.model import GPT
from tinylm.training.trainer import train

BASE = ModelConfig(vocab_size=64, block_size=24, n_layer=2, n_head=4, n_embd=32, dropout=0.0)
MODERN = dict(norm="rmsnorm", positions="rope", activation="swiglu", bias=False)

# A covering set: every value of every component appears at least once, mixed.
COMBOS = {
    "reference": {},
    "modern": MODERN,
    "modern-qk-gqa-tied": {**MODERN, "qk_norm": True, "n_kv_head": 2, "tie_embeddings": True},
    "rope-layernorm-relu2-nogain": dict(positions="rope", activation="relu2", norm_gain=False),
    "rms-learned-tanh-softcap": dict(norm="rmsnorm", activation="gelu_tanh", logit_softcap=5.0),
    "gqa1-zero-init-bias": dict(
        n_kv_head=1, zero_init_proj=True, qk_norm=True, mlp_hidden=48, rope_base=500.0,
        positions="rope", norm_eps=1e-6,
    ),
}  # fmt: skip


def make(overrides: dict, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(dataclasses.replace(BASE, **overrides)).eval()
    if overrides.get("zero_init_proj"):  # zero projections: make the blocks do something
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("proj.weight"):
                    p.normal_(0, 0.05)
    return model


def test_components_shape_the_parameters():
    def names(**kw):
        return {n: tuple(p.shape) for n, p in make(kw).named_parameters()}

    ref, modern = names(), names(**MODERN)
    assert "wpe.weight" in ref and "wpe.weight" not in modern  # RoPE: no position table
    assert "blocks.0.ln_1.bias" in ref and "blocks.0.ln_1.bias" not in modern  # RMSNorm
    assert not any(n.endswith(".bias") for n in modern)  # bias=False: none anywhere
    assert modern["blocks.0.mlp.fc.weight"] == (2 * 88, 32)  # gate|up, 8/3*32 -> 88
    assert names(n_kv_head=1)["blocks.0.attn.qkv.weight"] == (32 + 2 * 8, 32)
    assert names(qk_norm=True)["blocks.0.attn.q_norm.weight"] == (8,)
    assert not any("ln_" in n for n in names(norm_gain=False))
    assert names(mlp_hidden=40, activation="relu2")["blocks.0.mlp.fc.weight"] == (40, 32)


def test_zero_init_makes_every_block_the_identity():
    model = GPT(dataclasses.replace(BASE, **MODERN, zero_init_proj=True))
    x = torch.randn(2, 5, 32)
    for block in model.blocks:
        assert torch.equal(block(x), x)


def test_rope_logits_depend_on_relative_positions_only():
    """Shifting every position by the same amount leaves the attention scores unchanged."""
    model = make(MODERN)
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.qkv.weight.mul_(20)  # scores far from 0, so positions matter
    x = torch.randn(1, 6, 32)
    pos = torch.arange(6)
    a = attn(x, rope=model.rotary(pos))
    b = attn(x, rope=model.rotary(pos + 7))
    c = attn(x)  # no rotation at all differs
    assert (a - b).abs().max() < 1e-5 < 1e-3 * (a - c).abs().max()


def test_rope_angles_stay_fp32_in_a_bf16_model():
    """bf16 inference (model.to(bfloat16)) rotates by the very angles training used: the
    frequencies are not a buffer that the cast would round (0.09 off in cos at 500)."""
    model = make(dict(MODERN, n_embd=64, n_head=2, block_size=512))
    pos = torch.arange(512)
    cos, sin = model.rotary(pos)
    model.to(torch.bfloat16)
    assert all(torch.equal(a, b) for a, b in zip(model.rotary(pos), (cos, sin), strict=True))


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_qk_norm_runs_in_a_bf16_model(norm):
    """A model cast to bf16 for inference (its norm gains bf16 too) still runs its fp32
    QK-norm and follows the fp32 model's logits."""
    model = make(dict(qk_norm=True, norm=norm, positions="rope"))
    idx = torch.randint(0, 64, (2, 12))
    ref = model(idx)
    out = model.to(torch.bfloat16)(idx)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_softcap_bounds_logits_and_the_loss_uses_them():
    model = make({"logit_softcap": 2.0})
    with torch.no_grad():
        model.lm_head.weight.mul_(500)
    idx = torch.randint(0, 64, (2, 10))
    logits = model(idx)
    raw = model.lm_head(model(idx, return_hidden=True))
    assert raw.abs().max() > 4 and logits.abs().max() <= 2.0
    assert torch.allclose(logits, 2.0 * torch.tanh(raw / 2.0))
    assert torch.allclose(chunked_next_token_loss(model, idx), next_token_loss(logits, idx))


@pytest.mark.parametrize("name", COMBOS)
def test_combination_is_causal_and_trains(name):
    model = make(COMBOS[name]).train()
    idx = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        changed = idx.clone()
        changed[:, 9] = (changed[:, 9] + 1) % 64
        a, b = model(idx), model(changed)
        assert torch.allclose(a[:, :9], b[:, :9], atol=1e-6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = chunked_next_token_loss(model, idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


CACHE_AXES = list(
    itertools.product(("learned", "rope"), (False, True), (0, 2, 1), ("layernorm", "rmsnorm"))
)


@pytest.mark.parametrize(("positions", "qk_norm", "n_kv_head", "norm"), CACHE_AXES)
def test_kv_cache_greedy_equals_no_cache_with_left_padding(positions, qk_norm, n_kv_head, norm):
    """Prompts of different lengths, left-padded into one batch: greedy decoding with the
    cache gives the same tokens as without it, and as each prompt alone; past block_size
    too (the window then slides)."""
    model = make(
        dict(positions=positions, qk_norm=qk_norm, n_kv_head=n_kv_head, norm=norm,
             activation="swiglu" if positions == "rope" else "gelu")
    )  # fmt: skip
    prompts = [[5, 9, 3], [7, 1, 2, 8, 8, 4, 11], [60]]
    opts = dict(temperature=0.0)
    cached = generate_batch(model, prompts, 28, use_cache=True, **opts)
    uncached = generate_batch(model, prompts, 28, use_cache=False, **opts)
    alone = [generate_batch(model, [p], 28, **opts)[0] for p in prompts]
    assert cached == uncached == alone
    assert len(set(map(tuple, cached))) > 1  # the rows differ: a real test of padding


@pytest.mark.parametrize("name", COMBOS)
def test_kv_cache_greedy_equals_no_cache_for_the_covering_set(name):
    """The same with every value of every component (soft-cap, squared ReLU, gainless
    norms, tied output, biases, zero-init, MLP width, RoPE base, eps) in the cache path."""
    model = make(COMBOS[name])
    prompts = [[5, 9, 3], [7, 1, 2, 8, 8, 4, 11], [60]]
    cached = generate_batch(model, prompts, 28, use_cache=True, temperature=0.0)
    uncached = generate_batch(model, prompts, 28, use_cache=False, temperature=0.0)
    alone = [generate_batch(model, [p], 28, temperature=0.0)[0] for p in prompts]
    assert cached == uncached == alone


def test_config_refuses_bad_component_values():
    with pytest.raises(TinyLMError, match=r"model.norm='batchnorm'; choose one of"):
        load_config(None, ["model.norm=batchnorm"])
    with pytest.raises(TinyLMError, match="multiple of model.n_kv_head=3"):
        load_config(None, ["model.n_kv_head=3"])
    with pytest.raises(TinyLMError, match="even head size"):
        load_config(None, ["model.positions=rope", "model.n_embd=12", "model.n_head=4"])


@pytest.mark.parametrize("name", COMBOS)
def test_combination_resumes_bit_exactly(wiki_data, tmp_path, name):
    """Each combination through the real trainer (GPT-2 vocabulary, dropout on): 6 steps
    at once, or 3 steps then --resume to 6: the same metrics, bit for bit."""
    extra = [f"model.{key}={value}" for key, value in COMBOS[name].items()]
    args = [f"data.path={wiki_data}", *extra, *TINY_OVERRIDES, "model.dropout=0.1",
            "train.batch_size=4", "train.eval_interval=3", "train.eval_batches=1",
            "train.num_threads=1", "train.tensorboard=false",
            "train.checkpoint_interval=3"]  # fmt: skip
    train(load_config(None, [*args, "train.max_steps=6"]), tmp_path / "once")
    train(load_config(None, [*args, "train.max_steps=3"]), tmp_path / "split")
    train(load_config(None, [*args, "train.max_steps=6"]), tmp_path / "split", resume=True)
    assert _records(tmp_path / "once") == _records(tmp_path / "split")


def _records(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    drop = ("elapsed_s", "tokens_per_s")
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]
