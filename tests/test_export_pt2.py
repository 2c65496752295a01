"""`tinylm export --format pt2`: a torch.export program that runs with torch alone."""

import json

import torch
from test_cli import assert_one_line_error, run_cli

from tinylm.training.checkpoint import load_checkpoint


def test_pt2_export_gives_tinylm_logits_at_any_length(tiny_run, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "export", tiny_run, tmp_path / "pt2", "--format", "pt2")
    assert code == 0 and "max logit difference vs tinylm" in out
    info = json.loads((tmp_path / "pt2" / "model.json").read_text())
    assert info["tokenizer"] == "gpt2" and info["eot_id"] == 50256
    program = torch.export.load(tmp_path / "pt2" / "model.pt2").module()
    model = load_checkpoint(tiny_run).model.eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for shape in [(1, 1), (3, 7), (2, info["model"]["block_size"])]:
            idx = torch.randint(50257, shape, generator=generator)
            assert (program(idx) - model(idx)).abs().max().item() <= 1e-5

    code, _, err = run_cli(capsys, "export", tiny_run, tmp_path / "pt2", "--format", "pt2")
    assert_one_line_error(code, err, "already exists; pass --overwrite")


def test_pt2_export_of_the_modern_family(tmp_path, capsys):
    """RoPE, RMSNorm, SwiGLU, QK-norm and GQA trace into one program with dynamic shapes."""
    import dataclasses

    from test_hf_families import MODERN, trained_like

    model = trained_like(tmp_path / "ckpt", dataclasses.replace(MODERN, qk_norm=True, n_kv_head=2))
    code, _, _ = run_cli(capsys, "export", tmp_path / "ckpt", tmp_path / "pt2", "--format", "pt2")
    assert code == 0
    program = torch.export.load(tmp_path / "pt2" / "model.pt2").module()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for shape in [(1, 1), (3, 7), (2, MODERN.block_size)]:
            idx = torch.randint(50257, shape, generator=generator)
            assert (program(idx) - model(idx)).abs().max().item() <= 1e-5
