"""`tinylm export --format gguf`: every key and tensor read back with gguf's own reader
(always), and real llama.cpp (node-llama-cpp's prebuilt binaries) loading the file: the
same token ids as tinylm's tokenizer, the same greedy 32-token continuation and next-token
probabilities within a stated tolerance, for the reference (gpt2) family and the modern
(llama, qwen3) families, with GPT-2's BPE and with byte-level BPE tokenizer.json files."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error, run_cli
from test_hf import random_checkpoint

from tinylm.cli import main
from tinylm.config import MODEL_PRESETS
from tinylm.data.tokenizer import EOT, get_tokenizer
from tinylm.generate import generate
from tinylm.inference import load_for_inference
from tinylm.interop.llamacpp import llamacpp_available, run_llamacpp
from tinylm.interop.tokenizer import SAMPLE_TEXT

gguf = pytest.importorskip("gguf")

# Skipped only outside CI: .ci/run installs node-llama-cpp, so there a missing one fails.
needs_llamacpp = pytest.mark.skipif(
    not llamacpp_available() and not os.environ.get("CI"),
    reason="llama.cpp not installed (make llamacpp)",
)

TEXT = SAMPLE_TEXT + " The history of the United States began in 1776; it's 3.14 — 'quoted'."
PROMPT = "The history of the"
GREEDY = 32
# Next-token distributions, llama.cpp vs tinylm (fp32), after PROMPT: max |Δ log p| over
# all 50,257 tokens (a logit difference less the shift softmax ignores) and max |Δp|.
# f32: ggml's kernels vs torch's (and for GPT-2 ggml's GELU, the tanh approximation, for
# tinylm's exact one); measured <= 2.3e-5 in log p. f16 rounds the matrices (measured
# <= 6.7e-4) and q8_0 to 8 bits per value (measured <= 1.0e-2); docs/interop.md.
LOG_P_TOLERANCE = {"f32": 1e-4, "f16": 2e-3, "q8_0": 3e-2}
PROB_TOLERANCE = {"f32": 1e-6, "f16": 2e-5, "q8_0": 2e-4}


def export(run, out, weight_type="f32"):
    assert main(["export", str(run), str(out), "--format", "gguf", "--type", weight_type]) == 0
    return out / "model.gguf"


def read(file):
    reader = gguf.GGUFReader(file)
    keys = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: t for t in reader.tensors}
    return keys, tensors


def values(t):
    """A reader tensor as float32 in torch's (out, in) order."""
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    return gguf.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)


def rope_pairs(w, head_size):
    """Rows of each head as llama.cpp's llama graph pairs them: (0, hs/2, 1, hs/2+1, ...)."""
    half = head_size // 2
    order = [i // 2 + (i % 2) * half for i in range(head_size)]
    heads = w.shape[0] // head_size
    return torch.cat([w[h * head_size : (h + 1) * head_size][order] for h in range(heads)])


# --- the file itself, read back by gguf's reader (no llama.cpp) ------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3"])
def test_every_key_and_tensor_reads_back(family, family_run, tmp_path):
    run = family_run(family)
    file = export(run, tmp_path / "out")
    assert (tmp_path / "out" / "Modelfile").read_text().startswith("# ollama create")
    keys, tensors = read(file)
    model = load_for_inference(run).model
    c = model.config
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    arch = keys["general.architecture"]
    assert arch == family
    hs = c.n_embd // c.n_head
    expected_keys = {
        f"{arch}.context_length": 64,
        f"{arch}.embedding_length": 32,
        f"{arch}.block_count": 1,
        f"{arch}.attention.head_count": 2,
        f"{arch}.feed_forward_length": c.hidden_size,
        f"{arch}.vocab_size": 50257,
        "general.file_type": 0,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.bos_token_id": 50256,
        "tokenizer.ggml.eos_token_id": 50256,
        "tokenizer.ggml.eot_token_id": 50256,
        "tokenizer.ggml.add_bos_token": False,
    }
    if family == "gpt2":
        expected_keys[f"{arch}.attention.layer_norm_epsilon"] = pytest.approx(1e-5)
    else:
        expected_keys |= {
            f"{arch}.attention.head_count_kv": c.kv_heads,
            f"{arch}.attention.layer_norm_rms_epsilon": pytest.approx(1e-5),
            f"{arch}.rope.freq_base": 10000.0,
            f"{arch}.rope.dimension_count": hs,
        }
    for key, value in expected_keys.items():
        assert keys[key] == value, key
    tokens, types = keys["tokenizer.ggml.tokens"], keys["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 50257 and len(keys["tokenizer.ggml.merges"]) == 50000
    assert tokens[15496] == "Hello" and tokens[995] == "Ġworld" and tokens[50256] == EOT
    assert types[50256] == 3 and set(types[:50256]) == {1}  # control vs normal
    assert keys["tokenizer.ggml.merges"][0] == "Ġ t"

    # Every tensor, by an independent name map; f32 files hold tinylm's weights exactly.
    if family == "gpt2":
        names = {"token_embd": "wte", "position_embd": "wpe", "output_norm": "ln_f",
                 "output": "lm_head", "blk.0.attn_norm": "blocks.0.ln_1",
                 "blk.0.attn_qkv": "blocks.0.attn.qkv", "blk.0.attn_output": "blocks.0.attn.proj",
                 "blk.0.ffn_norm": "blocks.0.ln_2", "blk.0.ffn_up": "blocks.0.mlp.fc",
                 "blk.0.ffn_down": "blocks.0.mlp.proj"}  # fmt: skip
        wanted = {f"{g}.{p}": state[f"{t}.{p}"] for g, t in names.items()
                  for p in ("weight", "bias") if f"{t}.{p}" in state}  # fmt: skip
    else:
        q, k, v = np.split(state["blocks.0.attn.qkv.weight"], [32, 32 + c.kv_heads * hs])
        gate, up = np.split(state["blocks.0.mlp.fc.weight"], 2)
        if family == "llama":  # llama.cpp's llama graph rotates adjacent pairs
            q, k = (rope_pairs(torch.from_numpy(w), hs).numpy() for w in (q, k))
        wanted = {
            "token_embd.weight": state["wte.weight"],
            "output_norm.weight": state["ln_f.weight"],
            "blk.0.attn_norm.weight": state["blocks.0.ln_1.weight"],
            "blk.0.attn_q.weight": q,
            "blk.0.attn_k.weight": k,
            "blk.0.attn_v.weight": v,
            "blk.0.attn_output.weight": state["blocks.0.attn.proj.weight"],
            "blk.0.ffn_norm.weight": state["blocks.0.ln_2.weight"],
            "blk.0.ffn_gate.weight": gate,
            "blk.0.ffn_up.weight": up,
            "blk.0.ffn_down.weight": state["blocks.0.mlp.proj.weight"],
        }
        if family == "qwen3":
            wanted["blk.0.attn_q_norm.weight"] = state["blocks.0.attn.q_norm.weight"]
            wanted["blk.0.attn_k_norm.weight"] = state["blocks.0.attn.k_norm.weight"]
            wanted["output.weight"] = state["lm_head.weight"]  # untied here
    assert set(tensors) == set(wanted)
    for name, array in wanted.items():
        assert tensors[name].tensor_type == gguf.GGMLQuantizationType.F32, name
        assert np.array_equal(values(tensors[name]), array), name


@pytest.mark.parametrize("weight_type", ["f16", "q8_0"])
def test_smaller_weight_types_round_matrices_only(weight_type, tmp_path):
    """The seed-d128 preset (13.3M parameters): matrices in f16 (or q8_0 where rows are a
    multiple of 32), vectors in f32, every value within the type's rounding."""
    config = dataclasses.replace(MODEL_PRESETS["seed-d128"], dropout=0.0)
    model = random_checkpoint(tmp_path / "ckpt", config)
    file = export(tmp_path / "ckpt", tmp_path / "out", weight_type)
    keys, tensors = read(file)
    assert keys["general.file_type"] == {"f16": 1, "q8_0": 7}[weight_type]
    assert len(tensors) == 2 * 12 + 5  # 6 weights + 6 biases a block; wte, wpe, ln_f, output
    t = gguf.GGMLQuantizationType
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    for name, original in (("blk.1.ffn_up.weight", "blocks.1.mlp.fc.weight"),
                           ("output.weight", "lm_head.weight"),
                           ("blk.0.attn_norm.bias", "blocks.0.ln_1.bias")):  # fmt: skip
        stored, want = values(tensors[name]), state[original]
        kind = tensors[name].tensor_type
        if want.ndim == 1:
            assert kind == t.F32 and np.array_equal(stored, want)
        elif weight_type == "f16":
            assert kind == t.F16 and np.array_equal(stored, want.astype(np.float16))
        else:  # 32 values share one scale: error at most half a step of the block's largest
            assert kind == t.Q8_0
            assert np.abs(stored - want).max() <= np.abs(want).max() / 127 / 2 * 1.01
    f32_bytes = 4 * model.num_parameters()
    assert file.stat().st_size < {"f16": 0.55, "q8_0": 0.3}[weight_type] * f32_bytes


def test_refusals_are_one_line(tmp_path, capsys):
    """A model whose tokenizer llama.cpp cannot reproduce (bytes), one no llama.cpp
    architecture expresses (squared-ReLU MLP), and an unknown weight type."""
    from tinylm.config import ModelConfig

    config = ModelConfig(vocab_size=256, block_size=16, n_layer=1, n_head=2, n_embd=32)
    random_checkpoint(tmp_path / "bytes-ckpt", config, tokenizer="bytes")
    code, _, err = run_cli(
        capsys, "export", tmp_path / "bytes-ckpt", tmp_path / "o", "--format", "gguf"
    )
    assert_one_line_error(code, err, "tokenizer 'bytes' cannot be written to GGUF")

    relu2 = dataclasses.replace(MODEL_PRESETS["seed-d128"], activation="relu2", n_embd=32)
    random_checkpoint(tmp_path / "relu2", relu2)
    code, _, err = run_cli(capsys, "export", tmp_path / "relu2", tmp_path / "o", "--format", "gguf")
    assert_one_line_error(code, err, "cannot export to GGUF", "relu2")
    code, _, err = run_cli(capsys, "export", tmp_path / "relu2", tmp_path / "o", "--type", "q4_0")
    assert code == 2 and "invalid choice: 'q4_0'" in err
    assert not (tmp_path / "o").exists()


# --- real llama.cpp -----------------------------------------------------------------------


def llamacpp_parity(run, file, tokenizer, weight_type):
    """What llama.cpp makes of the file against tinylm: token ids on TEXT, greedy ids
    after PROMPT, max |Δp| over the whole next-token distribution after PROMPT."""
    loaded = load_for_inference(run)
    model, eot = loaded.model, tokenizer.eot_id
    prompt = tokenizer.encode(PROMPT)
    with torch.no_grad():
        ours_p = torch.softmax(model(torch.tensor([prompt]))[0, -1], -1).numpy()
        ours = generate(model, torch.tensor([prompt]), GREEDY, temperature=0.0, stop_token=eot)
    ours = ours[0, len(prompt) :].tolist()
    if eot in ours:  # llama.cpp stops at end of text too
        ours = ours[: ours.index(eot) + 1]
    answer = run_llamacpp({"model": str(file), "texts": [TEXT], "prompt": prompt,
                           "probabilities": True, "greedy": GREEDY, "context": 64,
                           "vocab_size": model.config.vocab_size})  # fmt: skip
    theirs_p = np.array(answer["probabilities"])
    diff = float(np.abs(theirs_p - ours_p).max())
    log_diff = float(np.abs(np.log(theirs_p) - np.log(ours_p)).max())  # = Δlogit - Δlog Z
    print(f"{weight_type}: max |Δp| {diff:.2e} (top p {ours_p.max():.3f}), max |Δlog p| "
          f"{log_diff:.2e}; greedy equal: {answer['greedy'] == ours}")  # fmt: skip
    assert answer["ids"][0] == tokenizer.encode(TEXT)
    assert answer["probabilities_listed"] == model.config.vocab_size  # none cut off
    assert diff <= PROB_TOLERANCE[weight_type] and log_diff <= LOG_P_TOLERANCE[weight_type]
    return answer["greedy"], ours


@needs_llamacpp
@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3"])
def test_llamacpp_computes_tinylm_s_model(family, family_run, tmp_path):
    run = family_run(family)
    tokenizer = get_tokenizer("gpt2")
    for weight_type in ("f32", "f16", "q8_0"):
        file = export(run, tmp_path / weight_type, weight_type)
        theirs, ours = llamacpp_parity(run, file, tokenizer, weight_type)
        if weight_type == "f32":
            assert theirs == ours
        else:  # rounded weights may flip a near-tie late in the continuation
            assert theirs[:8] == ours[:8]


def cut_gpt2_bpe(out, merges_kept):
    """GPT-2's BPE cut to its first K merges, <|endoftext|> as the last id (issue 15's
    small general-purpose vocabulary), as a tokenizers tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from tinylm.interop.tokenizer import _gpt2_vocab_and_merges

    vocab, merges = _gpt2_vocab_and_merges()
    kept = {t: i for t, i in vocab.items() if i < 256 + merges_kept}
    tok = Tokenizer(models.BPE(kept, [tuple(m.split(" ")) for m in merges[:merges_kept]]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])
    out.mkdir(parents=True)
    tok.save(str(out / "tokenizer.json"))
    return out / "tokenizer.json"


@needs_llamacpp
@pytest.mark.parametrize("kind", ["trained", "json-cut", "gpt2-1257"])
def test_llamacpp_reproduces_byte_level_bpe_tokenizers(kind, family_run, tmp_path_factory):
    """A BPE trained by `tinylm tokenizer train` (<|endoftext|> = 0), GPT-2's cut to 1,000
    merges as a tokenizer.json (<|endoftext|> last) and as tinylm's named gpt2-1257:
    llama.cpp's gpt2 tokenizer gives tinylm's ids, and the modern family on such a
    vocabulary generates the same greedy text."""
    tmp = tmp_path_factory.mktemp(kind)
    if kind == "trained":
        code = main(["tokenizer", "train", "builtin:wiki", "--vocab-size", "700",
                     "--out", str(tmp / "tok")])  # fmt: skip
        assert code == 0
        name = str(tmp / "tok" / "tokenizer.json")
    elif kind == "json-cut":
        name = str(cut_gpt2_bpe(tmp / "tok", 1000))
    else:
        name = kind
    data = tmp / "data"
    assert main(["prepare", "builtin:wiki", "--tokenizer", name, "--out", str(data)]) == 0
    tokenizer = get_tokenizer(name if kind == "gpt2-1257" else str(data / "tokenizer"))
    assert tokenizer.eot_id == (0 if kind == "trained" else 1256)
    run = family_run("llama", data)
    gguf_file = export(run, tmp / "gguf")
    keys, _ = read(gguf_file)
    assert keys["tokenizer.ggml.eos_token_id"] == tokenizer.eot_id
    assert keys["tokenizer.ggml.tokens"][tokenizer.eot_id] == EOT
    theirs, ours = llamacpp_parity(run, gguf_file, tokenizer, "f32")
    assert theirs == ours
    more = ["naïve café 東京 ☃ 🙂 x²", "  leading spaces\n\n\ttabs", "it's 12,345.67 don't we'll"]
    ids = run_llamacpp({"model": str(gguf_file), "texts": more})["ids"]
    assert ids == [tokenizer.encode(t) for t in more]


def test_tokenizer_json_with_another_pre_tokenizer_is_refused(tmp_path, capsys):
    """A BPE whose pre-tokenizer llama.cpp would not reproduce (Metaspace, say) is refused."""
    from tinylm.interop.tokenizer import gguf_vocab

    file = cut_gpt2_bpe(tmp_path / "data" / "tokenizer", 10)
    spec = json.loads(file.read_text())
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    file.write_text(json.dumps(spec))
    from tinylm.errors import TinyLMError

    with pytest.raises(TinyLMError, match="pre-tokenizer is not GPT-2's byte-level one"):
        gguf_vocab(str(file), tmp_path / "data", 300)
