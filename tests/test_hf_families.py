"""Export and import per model family: the modern family (RoPE + RMSNorm + SwiGLU) as
transformers' LlamaForCausalLM, with QK-norm as Qwen3ForCausalLM. Logits within 1e-5 (fp32)
on both of transformers' attention paths, greedy `generate` equal, loading without tinylm,
import back bit-exact, and every combination no class expresses refused in one line.
(The GPT-2 family's own tests are in test_hf.py.)"""

import dataclasses
import json

import pytest
import torch
from test_cli import assert_one_line_error, run_cli
from test_hf import (
    TOLERANCE,
    greedy_matches,
    greedy_until_eot,
    random_checkpoint,
    run_without_tinylm,
)

from tinylm.config import ModelConfig
from tinylm.data.tokenizer import get_tokenizer
from tinylm.interop.hf import export_hf, import_hf, max_logit_difference
from tinylm.interop.tokenizer import export_tokenizer
from tinylm.model import Rotary, apply_rotary
from tinylm.training.checkpoint import load_checkpoint

transformers = pytest.importorskip("transformers")

MODERN = ModelConfig(
    vocab_size=50257, block_size=48, n_layer=2, n_head=4, n_embd=64, dropout=0.0, bias=False,
    activation="swiglu", norm="rmsnorm", positions="rope", tie_embeddings=True,
)  # fmt: skip
FAMILIES = {
    "llama": (MODERN, "LlamaForCausalLM"),
    "llama-gqa-bias-nogain-untied": (
        dataclasses.replace(MODERN, n_kv_head=2, bias=True, norm_gain=False, rope_base=500.0,
                            tie_embeddings=False, norm_eps=1e-6, mlp_hidden=96, dropout=0.1),
        "LlamaForCausalLM",
    ),
    "qwen3-gqa": (dataclasses.replace(MODERN, qk_norm=True, n_kv_head=1), "Qwen3ForCausalLM"),
}  # fmt: skip


def trained_like(path, config, seed=0):
    return random_checkpoint(path, config, seed, random_gains=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_export_gives_tinylm_logits_and_greedy_text_in_transformers(family, tmp_path):
    config, architecture = FAMILIES[family]
    model = trained_like(tmp_path / "ckpt", config)
    result = export_hf(tmp_path / "ckpt", tmp_path / "hf")
    assert result.family.architecture == architecture and result.max_logit_diff <= TOLERANCE
    idx = torch.randint(50257, (3, 48), generator=torch.Generator().manual_seed(7))
    for attention in ("sdpa", "eager"):
        hf = transformers.AutoModelForCausalLM.from_pretrained(
            tmp_path / "hf", dtype=torch.float32, attn_implementation=attention
        ).eval()
        assert type(hf).__name__ == architecture
        gains = 0 if config.norm_gain else (2 * config.n_layer + 1) * config.n_embd
        assert hf.num_parameters() == model.num_parameters() + gains
        diff = max_logit_difference(model, hf, idx)
        print(f"{family} ({attention}): max |logit difference| {diff:.2e}, fp32, 3x48 tokens")
        assert diff <= TOLERANCE
    assert greedy_matches(model, hf, [464, 2106, 286], 24, eot=50256)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert f"`{architecture}`" in card and "rotary (RoPE" in card

    # Import back: the very same model (config, every weight, logits bit for bit).
    ckpt = import_hf(tmp_path / "hf", tmp_path / "back")
    assert ckpt.config.model == config
    original = model.state_dict()
    assert ckpt.model.state_dict().keys() == original.keys()
    assert all(torch.equal(original[k], v) for k, v in ckpt.model.state_dict().items())
    assert torch.equal(ckpt.model.eval()(idx), model(idx))


def test_rope_layout_is_checked_by_the_parity():
    """Interleaved RoPE pairs (Meta's original layout) in place of rotate-half would move the
    logits far beyond the tolerance: the parity check can see a layout mistake."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 8)
    rotary = Rotary(dataclasses.replace(MODERN, n_embd=16, n_head=2))
    cos, sin = rotary(torch.arange(5))
    half = apply_rotary(x, cos, sin)
    interleaved = torch.view_as_real(
        torch.view_as_complex(x.reshape(1, 2, 5, 4, 2))
        * torch.polar(torch.ones(5, 4), torch.arange(5)[:, None] * rotary.inv_freq())
    ).flatten(-2)
    assert (half - interleaved).abs().max() > 0.1


def test_exports_load_and_generate_without_tinylm(tmp_path):
    """Both modern classes, read by transformers in an interpreter where importing tinylm
    fails: the logits and the greedy continuation are tinylm's."""
    dirs = {}
    for family in ("llama", "qwen3-gqa"):
        model = trained_like(tmp_path / family, FAMILIES[family][0])
        export_hf(tmp_path / family, tmp_path / f"{family}-hf")
        dirs[family] = (model, str(tmp_path / f"{family}-hf"))
    got = run_without_tinylm(f"""
result = {{}}
for family, path in {json.dumps({f: d for f, (_, d) in dirs.items()})}.items():
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = tok("The history of", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    out = model.generate(ids, do_sample=False, max_new_tokens=12)
    result[family] = {{"ids": ids[0].tolist(), "logits": logits[0, -1].tolist(),
                      "greedy": out[0].tolist(), "class": type(model).__name__}}
""")
    tok = get_tokenizer("gpt2")
    for family, (model, _) in dirs.items():
        g = got[family]
        assert g["ids"] == tok.encode("The history of")
        assert g["class"] == FAMILIES[family][1]
        with torch.no_grad():
            ours = model(torch.tensor([g["ids"]]))[0, -1]
        assert (ours - torch.tensor(g["logits"])).abs().max().item() <= TOLERANCE
        assert g["greedy"] == greedy_until_eot(model, g["ids"], 12, tok.eot_id)


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "Qwen3ForCausalLM"])
def test_transformers_made_checkpoint_imports_with_its_logits(architecture, tmp_path, capsys):
    """A model built by transformers itself (not by our exporter) imports with its logits."""
    torch.manual_seed(0)
    cls = getattr(transformers, architecture)
    settings = dict(vocab_size=50257, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=40,
                    rms_norm_eps=1e-6, tie_word_embeddings=False, head_dim=8)  # fmt: skip
    hf = cls(cls.config_class(**settings)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    hf.save_pretrained(tmp_path / "hf")
    export_tokenizer("gpt2", None, tmp_path / "hf", 40)
    code, out, _ = run_cli(capsys, "import", tmp_path / "hf", "--out", tmp_path / "ckpt")
    assert code == 0, out
    ckpt = load_checkpoint(tmp_path / "ckpt")
    m = ckpt.config.model
    assert (m.positions, m.norm, m.activation, m.kv_heads, m.mlp_hidden) == (
        "rope", "rmsnorm", "swiglu", 2, 80)  # fmt: skip
    assert m.qk_norm is (architecture == "Qwen3ForCausalLM")
    idx = torch.randint(50257, (2, 40), generator=torch.Generator().manual_seed(1))
    assert max_logit_difference(ckpt.model, hf, idx) <= TOLERANCE
    assert greedy_matches(ckpt.model.eval(), hf, [464, 2106, 286], 16, eot=50256)


REFUSED = [
    (dict(norm="layernorm"), "model.norm=layernorm: LlamaForCausalLM has RMSNorm only"),
    (dict(activation="relu2"), "model.activation=relu2: LlamaForCausalLM has a SwiGLU MLP"),
    (dict(logit_softcap=30.0), "model.logit_softcap=30: LlamaForCausalLM has no logit soft"),
    (dict(qk_norm=True, bias=True), "model.bias=true: Qwen3ForCausalLM's MLP has no biases"),
    (dict(qk_norm=True, activation="gelu"), "model.activation=gelu: Qwen3ForCausalLM has a"),
    (dict(positions="learned", activation="gelu"), "model.norm=rmsnorm: GPT-2 has LayerNorm only"),
    (dict(positions="learned", norm="layernorm", activation="gelu", bias=True, n_kv_head=2),
     "model.n_kv_head=2 (grouped-query attention) has no GPT-2 equivalent"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "fragment"), REFUSED)
def test_export_refuses_what_no_family_expresses(change, fragment, tmp_path, capsys):
    random_checkpoint(tmp_path / "ckpt", dataclasses.replace(MODERN, **change))
    code, _, err = run_cli(capsys, "export", tmp_path / "ckpt", tmp_path / "out")
    assert_one_line_error(code, err, "cannot export to Hugging Face format: " + fragment)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}},
         "rope_type='linear' (scaled RoPE)"),
        ({"head_dim": 16}, "head_dim=16"),
        ({"attention_bias": True}, "attention_bias != mlp_bias"),
        ({"model_type": "qwen3", "head_dim": 8, "attention_bias": True}, "Qwen3's bias-free MLP"),
        ({"model_type": "qwen3", "head_dim": 8, "use_sliding_window": True},
         "use_sliding_window=true"),
        ({"model_type": "qwen3"}, "head_dim=128"),  # Qwen3Config's default, not 32 / 4
    ],
)  # fmt: skip
def test_import_refuses_llama_options_tinylm_lacks(change, fragment, tmp_path, capsys):
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    config = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 4, **change}  # fmt: skip
    (hf_dir / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "import", hf_dir, "--out", tmp_path / "ckpt")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "ckpt").exists()


def test_absent_config_keys_mean_what_transformers_reads_them_as():
    """A config.json key left out takes the default of the family's own config class
    (Qwen3Config's differ from LlamaConfig's), as AutoModelForCausalLM would read it."""
    from tinylm.interop.llama import LLAMA, QWEN3

    sparse = {"hidden_size": 256, "num_hidden_layers": 1, "num_attention_heads": 2}
    for family in (LLAMA, QWEN3):
        ours = family.model_config({**sparse, "model_type": family.model_type}, "config.json")
        theirs = getattr(transformers, family.config_class)(**sparse)
        assert ours.kv_heads == theirs.num_key_value_heads
        assert ours.n_embd // ours.n_head == theirs.head_dim
        assert ours.hidden_size == theirs.intermediate_size
        assert ours.block_size == theirs.max_position_embeddings
        assert ours.vocab_size == theirs.vocab_size
        assert ours.norm_eps == theirs.rms_norm_eps


@pytest.mark.slow
@pytest.mark.parametrize("qk_norm", [False, True], ids=["llama", "qwen3"])
@pytest.mark.parametrize("preset", ["modern-d128", "modern-d256"])
def test_modern_presets_export_within_tolerance(preset, qk_norm, tmp_path):
    """The full-size modern presets (projections not zero, so every block computes),
    3 x 128 random tokens, both attention paths: the numbers in docs/interop.md."""
    from tinylm.config import MODEL_PRESETS

    config = dataclasses.replace(MODEL_PRESETS[preset], zero_init_proj=False, qk_norm=qk_norm)
    model = trained_like(tmp_path / "ckpt", config)
    result = export_hf(tmp_path / "ckpt", tmp_path / "hf")
    idx = torch.randint(50257, (3, 128), generator=torch.Generator().manual_seed(7))
    diffs = []
    for attention in ("sdpa", "eager"):
        hf = transformers.AutoModelForCausalLM.from_pretrained(
            tmp_path / "hf", dtype=torch.float32, attn_implementation=attention
        ).eval()
        diffs.append(max_logit_difference(model, hf, idx))
    print(f"{preset} {result.family.architecture} ({model.num_parameters():,} params): "
          f"sdpa {diffs[0]:.2e}, eager {diffs[1]:.2e}")  # fmt: skip
    assert max(diffs) <= TOLERANCE


def test_the_cpu_recipe_exports_as_llama_with_its_small_vocabulary(tmp_path):
    """recipe-d256 (docs/results/recipe.md) with the gpt2-8192 tokenizer: logits within
    tolerance, the tokenizer's ids, and the same greedy text in transformers."""
    from tinylm.config import MODEL_PRESETS

    config = dataclasses.replace(MODEL_PRESETS["recipe-d256"], zero_init_proj=False)
    model = random_checkpoint(tmp_path / "ckpt", config, random_gains=True, tokenizer="gpt2-8192")
    result = export_hf(tmp_path / "ckpt", tmp_path / "hf")
    assert result.family.architecture == "LlamaForCausalLM"
    assert result.max_logit_diff <= TOLERANCE
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    idx = torch.randint(8192, (2, 128), generator=torch.Generator().manual_seed(7))
    assert max_logit_difference(model, hf, idx) <= TOLERANCE
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    prompt = get_tokenizer("gpt2-8192").encode("The history of the United States")
    assert len(hf_tok) == 8192 and hf_tok.encode("The history of the United States") == prompt
    assert greedy_matches(model, hf, prompt, 16, eot=8191)
