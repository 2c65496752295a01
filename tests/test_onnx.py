"""`tinylm export --format onnx`: onnxruntime (CPU) computes tinylm's logits within 1e-4 at
any batch size and length up to the context, and continues a prompt greedily with the
same 32 tokens, for the reference (gpt2) and the modern (llama, qwen3) families."""

import json

import numpy as np
import pytest
import torch

from tinylm.cli import main
from tinylm.data.tokenizer import get_tokenizer
from tinylm.generate import generate
from tinylm.inference import load_for_inference
from tinylm.interop.tokenizer import SAMPLE_TEXT

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3"])
def test_onnxruntime_gives_tinylm_logits_and_greedy_text(family, family_run, tmp_path, capsys):
    from tinylm.interop.onnx import onnx_greedy, onnx_session

    run = family_run(family)
    out = tmp_path / "onnx"
    assert main(["export", str(run), str(out), "--format", "onnx"]) == 0
    assert "max logit difference vs tinylm in onnxruntime" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"model.onnx", "model.json", "tokenizer.json"}

    # Batch and length are symbolic in the graph, not fixed at the example's.
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert graph.input[0].name == "input_ids" and all(dims), dims

    model = load_for_inference(run).model
    session = onnx_session(ort, out / "model.onnx", threads=2)
    generator = torch.Generator().manual_seed(3)
    worst = 0.0
    for batch, length in ((3, 17), (1, 64), (2, 1)):
        idx = torch.randint(50257, (batch, length), generator=generator)
        theirs = session.run(["logits"], {"input_ids": idx.numpy()})[0]
        with torch.no_grad():
            worst = max(worst, float(np.abs(theirs - model(idx).numpy()).max()))
    print(f"{family}: max |Δlogit| onnxruntime vs tinylm {worst:.2e} (fp32)")
    assert worst <= 1e-4

    tokenizer = get_tokenizer("gpt2")
    prompt = tokenizer.encode("The history of the")
    with torch.no_grad():
        ours = generate(model, torch.tensor([prompt]), 32, temperature=0.0)[0, len(prompt) :]
    theirs = onnx_greedy(session, prompt, 32, 64, stop=None)
    assert theirs == ours.tolist()

    # The tokenizer beside it encodes as tinylm does (tokenizers, as transformers.js reads it).
    from tokenizers import Tokenizer

    shipped = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert shipped.encode(SAMPLE_TEXT, add_special_tokens=False).ids == tokenizer.encode(
        SAMPLE_TEXT
    )
    assert json.loads((out / "model.json").read_text())["eot_id"] == 50256


def test_a_bytes_model_exports_without_a_tokenizer_file(tmp_path, capsys):
    """The bytes tokenizer needs no file (ids are UTF-8 bytes); a second export needs
    --overwrite, and replaces the first whole."""
    from test_cli import assert_one_line_error, run_cli
    from test_hf import random_checkpoint

    from tinylm.config import ModelConfig

    config = ModelConfig(vocab_size=256, block_size=16, n_layer=1, n_head=2, n_embd=32)
    random_checkpoint(tmp_path / "ckpt", config, tokenizer="bytes")
    code, out, _ = run_cli(capsys, "export", tmp_path / "ckpt", tmp_path / "o", "--format", "onnx")
    assert code == 0 and "max logit difference" in out
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"model.onnx", "model.json"}
    assert json.loads((tmp_path / "o" / "model.json").read_text())["eot_id"] == 0
    code, _, err = run_cli(capsys, "export", tmp_path / "ckpt", tmp_path / "o", "--format", "onnx")
    assert_one_line_error(code, err, "already exists; pass --overwrite")
    code, _, _ = run_cli(capsys, "export", tmp_path / "ckpt", tmp_path / "o", "--format", "onnx",
                         "--overwrite")  # fmt: skip
    assert code == 0 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
