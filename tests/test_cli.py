"""The real `tinylm` CLI end to end, and every bad input a user can cause."""

import json
import math
import subprocess
import sys

import pytest
from conftest import TINY_OVERRIDES

from tinylm.cli import main


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- the happy path: prepare -> train -> eval -> generate -> report -----------------------


def test_train_writes_a_complete_run(tiny_run):
    assert (tiny_run / "config.yaml").is_file()
    assert (tiny_run / "loss.png").stat().st_size > 10_000
    assert {p.name for p in (tiny_run / "checkpoints" / "latest").iterdir()} == {
        "model.safetensors",
        "state.safetensors",
        "meta.json",
    }
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in train] == list(range(1, 31))
    assert [r["step"] for r in val] == [10, 20, 30]
    assert train[-1]["tokens"] == 30 * 8 * 32
    assert train[0]["loss"] > 10.5 and train[-1]["loss"] < train[0]["loss"] - 2  # it learns
    assert all(r["grad_norm"] > 0 and r["lr"] == 3e-3 for r in train)
    meta = json.loads((tiny_run / "checkpoints" / "latest" / "meta.json").read_text())
    assert meta["step"] == 30 and meta["tokenizer"]["name"] == "gpt2"
    assert meta["train_loss"] == pytest.approx(sum(r["loss"] for r in train) / 30)
    assert meta["last_step_loss"] == train[-1]["loss"]


def test_eval_generate_report(tiny_run, capsys):
    code, out, _ = run_cli(capsys, "eval", tiny_run, "--split", "val", "test")
    assert code == 0 and "perplexity" in out
    results = json.loads((tiny_run / "eval.json").read_text())
    for split in ("val", "test"):
        r = results[split]
        assert math.isclose(r["perplexity"], math.exp(r["loss"]), rel_tol=1e-9)
        assert 4 < r["loss"] < 10.5 and 0.5 < r["bits_per_byte"] < 4 and r["tokens"] > 5000

    sample = ["generate", tiny_run, "--prompt", "The history of", "--max-new-tokens", 20]
    sample += ["--num-samples", 2, "--seed", 1]
    code, out, _ = run_cli(capsys, *sample)
    assert code == 0 and out.count("The history of") == 2
    assert (tiny_run / "samples.txt").read_text().count("The history of") == 2
    _, out2, _ = run_cli(capsys, *sample)
    assert out2 == out  # seeded

    code, out, _ = run_cli(capsys, "report", tiny_run)
    assert code == 0 and "| tiny |" in out and "## Samples" in out
    assert "- optimizer: AdamW lr 0.003, weight decay 0.01" in out
    assert "- schedule: constant\n" in out and "layernorm, learned positions, gelu MLP" in out
    assert (tiny_run / "report.md").read_text() == out.rstrip("\n") + "\n"


def test_report_names_muon_and_a_clock_schedule(tiny_run, tmp_path, capsys):
    import shutil

    import yaml

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run, symlinks=True)
    config = yaml.safe_load((run / "config.yaml").read_text())
    clock = {"schedule": "wsd", "schedule_unit": "time", "warmup": 0.02, "decay_fraction": 0.4,
             "decay_shape": "1-sqrt", "min_lr_ratio": 0.0}  # fmt: skip
    config["optim"].update(optimizer="muon", muon_lr=0.01, **clock)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    code, out, _ = run_cli(capsys, "report", run, "--out", tmp_path / "r.md")
    assert code == 0
    muon = "- optimizer: Muon lr 0.01 (momentum 0.95, weight decay 0.0) on the blocks' matrices; "
    assert muon in out
    assert "AdamW lr 0.003, weight decay 0.01, betas (0.9, 0.999) on the rest; grad clip 1.0" in out
    assert "- schedule: wsd, warmup 0.02 of the time budget, 1-sqrt decay over the last 0.4 " in out


def test_report_skips_null_losses_of_skipped_steps(tiny_run, tmp_path, capsys):
    """A non-finite loss is logged as null; the report reads around it (no TypeError)."""
    import shutil

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run, symlinks=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = min(r["val_loss"] for r in records if r["kind"] == "val")
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({**records[-1], "kind": "val", "val_loss": None}) + "\n")
    code, out, _ = run_cli(capsys, "report", run, "--out", tmp_path / "r.md")
    assert code == 0 and f"{best:.4f}" in out


def test_help_explains_every_subcommand():
    for args in ([], ["prepare"], ["train"], ["eval"], ["generate"], ["report"]):
        result = subprocess.run(
            [sys.executable, "-m", "tinylm", *args, "--help"], capture_output=True, text=True
        )
        assert result.returncode == 0 and "usage: tinylm" in result.stdout
        assert len(result.stdout) > 300


# --- bad input: one clear line, exit 2, nothing half-written ------------------------------


def test_missing_path(tmp_path, capsys):
    code, _, err = run_cli(capsys, "prepare", tmp_path / "nope.txt", "--out", tmp_path / "d")
    assert_one_line_error(code, err, "nope.txt", "no such file")
    assert not (tmp_path / "d").exists()


def test_empty_corpus(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("   \n")
    code, _, err = run_cli(capsys, "prepare", tmp_path / "corpus", "--out", tmp_path / "d")
    assert_one_line_error(code, err, "no documents")
    assert not (tmp_path / "d").exists()


def test_non_utf8_file(tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    code, _, err = run_cli(capsys, "prepare", tmp_path / "latin1.txt", "--out", tmp_path / "d")
    assert_one_line_error(code, err, "not valid UTF-8 at byte 3", "--on-invalid-utf8")
    assert not (tmp_path / "d").exists()


def test_binary_file(tmp_path, capsys):
    (tmp_path / "x.txt").write_bytes(bytes(range(256)) * 4)
    code, _, err = run_cli(capsys, "prepare", tmp_path / "x.txt", "--out", tmp_path / "d")
    assert_one_line_error(code, err, "binary")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_lone_surrogate_in_jsonl(tmp_path, capsys):
    (tmp_path / "a.jsonl").write_text('{"text": "ok"}\n{"text": "half an emoji \\ud83d"}\n')
    code, _, err = run_cli(capsys, "prepare", tmp_path / "a.jsonl", "--out", tmp_path / "d")
    assert_one_line_error(code, err, "a.jsonl:2", "unpaired surrogate", "--on-invalid-utf8")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "train.max_steps=inf"], "train.max_steps: expected an integer"),
        (["train", "train.eval_batches=-1"], "train.eval_batches=-1 is out of range"),
        (["train", "model.preset=[1]"], "unknown model preset"),
        (["train", "train.device=mps", "data.path=none"], "train.device='mps'"),
        (["prepare", "builtin:wiki", "--workers", "-1"], "--workers"),
        (["report", "nowhere"], "not a tinylm run directory"),
    ],
)
def test_more_bad_settings(tmp_path, capsys, args, message):
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "out")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_one_line(tiny_run, tmp_path, capsys):
    code, _, err = run_cli(capsys, "report", tiny_run, "--out", tmp_path / "no" / "dir" / "r.md")
    assert_one_line_error(code, err, "No such file or directory")


def test_bad_jsonl_field(tmp_path, capsys):
    (tmp_path / "a.jsonl").write_text('{"content": "hello"}\n')
    code, _, err = run_cli(capsys, "prepare", tmp_path / "a.jsonl", "--out", tmp_path / "d")
    assert_one_line_error(code, err, "a.jsonl:1", "no field 'text'", "--text-field")


def test_unknown_config_key(tmp_path, capsys, wiki_data):
    code, _, err = run_cli(
        capsys,
        "train",
        f"data.path={wiki_data}",
        "optim.learning_rate=1e-3",
        "--out",
        tmp_path / "run",
    )
    assert_one_line_error(code, err, "optim.learning_rate")
    assert not (tmp_path / "run").exists()


def test_missing_dataset(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "train", f"data.path={tmp_path / 'none'}", "--out", tmp_path / "r"
    )
    assert_one_line_error(code, err, "tinylm prepare")


def test_shards_from_another_tokenizer_are_refused(tmp_path, capsys, wiki_data, tiny_run):
    other = tmp_path / "other"
    other.mkdir()
    for f in wiki_data.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer"]["fingerprint"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))

    code, _, err = run_cli(
        capsys, "train", f"data.path={other}", *TINY_OVERRIDES, "--out", tmp_path / "r"
    )
    assert_one_line_error(code, err, "tokenized with gpt2")
    assert not (tmp_path / "r").exists()
    before = (tiny_run / "eval.json").read_text() if (tiny_run / "eval.json").exists() else None
    code, _, err = run_cli(capsys, "eval", tiny_run, "--data", other)
    assert_one_line_error(code, err, "tokenized with gpt2", "the model")
    after = (tiny_run / "eval.json").read_text() if (tiny_run / "eval.json").exists() else None
    assert before == after


def test_existing_run_is_not_overwritten(tiny_run, capsys, wiki_data):
    before = (tiny_run / "metrics.jsonl").read_bytes()
    code, _, err = run_cli(capsys, "train", f"data.path={wiki_data}", "--out", tiny_run)
    assert_one_line_error(code, err, "already exists", "--overwrite")
    assert (tiny_run / "metrics.jsonl").read_bytes() == before


def test_no_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", tmp_path)
    assert_one_line_error(code, err, "no checkpoint")


def test_error_through_the_console_script_has_no_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinylm",
            "prepare",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_failed_overwrite_keeps_the_earlier_run(tiny_run, capsys, tmp_path):
    before = (tiny_run / "metrics.jsonl").read_bytes()
    code, _, err = run_cli(
        capsys, "train", f"data.path={tmp_path / 'none'}", "--out", tiny_run, "--overwrite"
    )
    assert_one_line_error(code, err, "no such dataset")
    assert (tiny_run / "metrics.jsonl").read_bytes() == before


def test_damaged_checkpoint(tiny_run, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    latest = tiny_run / "checkpoints" / "latest"
    (ckpt / "meta.json").write_bytes((latest / "meta.json").read_bytes())
    (ckpt / "model.safetensors").write_bytes((latest / "model.safetensors").read_bytes()[:1000])
    code, _, err = run_cli(capsys, "generate", ckpt)
    assert_one_line_error(code, err, "damaged or unreadable weights")


def test_out_of_memory_is_one_line_and_keeps_the_earlier_run(tmp_path, wiki_data, tiny_run):
    """Under a 6 GB address-space limit a 2048-block batch of a 2048-wide model cannot
    allocate its activations; the run it was to overwrite survives whole."""
    import resource
    import shutil

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

    run = tmp_path / "runs" / "run"
    shutil.copytree(tiny_run, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    args = ["model.n_embd=2048", "model.n_head=2", "model.n_layer=1", "model.block_size=64"]
    result = subprocess.run(
        [sys.executable, "-m", "tinylm", "train", f"data.path={wiki_data}", *args,
         "train.device=cpu", "train.batch_size=2048", "train.max_steps=1",
         "--out", str(run), "--overwrite"],
        capture_output=True, text=True, preexec_fn=limit_memory,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error: out of memory at batch size 2048" in result.stderr
    assert "Traceback" not in result.stderr
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in run.parent.iterdir()] == ["run"]  # nothing half-written beside it


def test_eval_checks_every_split_before_evaluating_any(tiny_run, capsys):
    # A misspelt split after a good one used to evaluate the good one, print half a table,
    # then fail without recording it; a split named twice was evaluated twice.
    before = (tiny_run / "eval.json").read_bytes() if (tiny_run / "eval.json").exists() else None
    code, out, err = run_cli(capsys, "eval", tiny_run, "--split", "val", "nope")
    assert_one_line_error(code, err, "no split 'nope'")
    assert out == ""
    after = (tiny_run / "eval.json").read_bytes() if (tiny_run / "eval.json").exists() else None
    assert after == before
    code, out, _ = run_cli(capsys, "eval", tiny_run, "--split", "val", "val")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["split", "val"], out


def test_a_new_run_in_the_current_directory_is_refused(tmp_path, capsys, monkeypatch, wiki_data):
    # `--out .` was "Device or resource busy" (the directory is renamed aside for a new
    # run); `--out ../HERE` trained into a new directory and left the shell in a deleted one.
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for out in (".", "../here", ".."):
        code, _, err = run_cli(
            capsys, "train", f"data.path={wiki_data}", *TINY_OVERRIDES, "--out", out
        )
        assert_one_line_error(code, err, "is the current directory")
        assert here.is_dir() and here.samefile(".") and not any(here.iterdir())
