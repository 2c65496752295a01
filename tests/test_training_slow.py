"""Long tests (`make test-slow`): the real reference architecture on the built-in corpus."""

import pytest

from tinylm.cli import main


@pytest.mark.slow
def test_reference_model_learns_the_builtin_corpus(wiki_data, tmp_path, capsys):
    """seed-d128 with the demo's recipe for 200 steps (~2 min on 2 cores): held-out loss
    falls from ln(50257) = 10.8 to below 7 (the demo's curve passes 6.6 at step 200)."""
    run = tmp_path / "run"
    args = [
        "train",
        "configs/cpu_demo.yaml",
        f"data.path={wiki_data}",
        "train.max_minutes=0",
        "train.max_steps=200",
        "train.eval_interval=0",
        "--out",
        str(run),
    ]
    assert main(args) == 0
    assert main(["eval", str(run), "--split", "val", "test"]) == 0
    out = capsys.readouterr().out
    val_loss = float(out.split("\n   val")[1].split()[1])
    assert val_loss < 7.0
