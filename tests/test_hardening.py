"""Issue 18's defects, each as a user meets it: leftovers, a full disk, tracebacks from
input, import sizes, silently accepted input, paths from metadata, the memory bound of a
text file without newlines, a malicious pickle. (Locks: test_lock.py; kills:
test_kills.py; every malformed value: test_malformed.py.)"""

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import pytest
import safetensors.torch
import torch
from conftest import TINY_OVERRIDES
from test_cli import assert_one_line_error, run_cli

from tinylm.data.prepare import PrepareOptions, prepare
from tinylm.data.sources import SourceCounts, SourceOptions, _read_text
from tinylm.faults import KILL_ENV

TINY = [*TINY_OVERRIDES, "train.tensorboard=false", "train.max_steps=4", "train.eval_interval=0"]


def hidden_temporaries(root):
    return [str(p) for p in root.rglob(".*") if ".tmp" in p.name or ".old-" in p.name]


# --- 3. leftovers ----------------------------------------------------------------------


PREPARE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tinylm.data.prepare import PrepareOptions, prepare
    prepare(PrepareOptions(sources=["builtin:wiki"], out=Path(sys.argv[1]), tokenizer="bytes",
                           chunk_chars=200_000, checkpoint_chunks=1, workers=1))
    """
)


def test_a_prepare_killed_at_a_progress_save_resumes_to_a_clean_dataset(tmp_path):
    out = tmp_path / "data"
    env = {**os.environ, KILL_ENV: "write:before-rename@2"}  # the second progress.json
    killed = subprocess.run([sys.executable, "-c", PREPARE, str(out)], env=env, timeout=300)
    assert killed.returncode == -9
    partial = tmp_path / ".data.partial"
    assert any(".progress.json.tmp-" in p.name for p in partial.iterdir())
    again = subprocess.run(
        [sys.executable, "-c", PREPARE, str(out)], capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert "resuming the interrupted prepare" in again.stderr
    assert hidden_temporaries(tmp_path) == []
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-c", PREPARE, str(reference)], check=True, timeout=300)
    for shard in reference.glob("*.bin"):
        assert (out / shard.name).read_bytes() == shard.read_bytes()


def test_plot_into_a_directory_is_one_line_and_leaves_nothing(tiny_run, tmp_path, capsys):
    target = tmp_path / "plots"
    target.mkdir()
    code, _, err = run_cli(capsys, "plot", tiny_run, "--out", target)
    assert_one_line_error(code, err, str(target))
    assert list(tmp_path.rglob("*")) == [target]


# --- 5. a full disk during a checkpoint write ------------------------------------------

FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from tinylm.cli import main
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.exit(main(sys.argv[2:]))
    """
)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_temp(tmp_path, wiki_data):
    """A file-size limit makes the safetensors writer fail as a full disk does (EFBIG)."""
    out = tmp_path / "run"
    args = ["train", f"data.path={wiki_data}", *TINY, "train.checkpoint_interval=2"]
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, "1000000", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # the model's weights are ~6.5 MB: the first checkpoint cannot be written
    assert_one_line_error(result.returncode, result.stderr, "disk full", "checkpoint")
    assert hidden_temporaries(tmp_path) == []
    assert not out.exists()  # a new run that never had a checkpoint leaves nothing


# --- 6. tracebacks from user input ------------------------------------------------------


def test_a_config_file_that_is_not_utf8(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"train:\n  seed: \xff\xfe\n")
    code, _, err = run_cli(capsys, "train", bad, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "not UTF-8")


def test_a_damaged_eval_json_costs_no_results(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    (run / "eval.json").write_text('{"val": {"loss": 1.0')  # cut short
    code, _, err = run_cli(capsys, "report", run)
    assert_one_line_error(code, err, "eval.json", "damaged")
    code, _, err = run_cli(capsys, "eval", run, "--split", "val")
    assert code == 0, err
    assert "eval.json.damaged" in err
    assert set(json.loads((run / "eval.json").read_text())) == {"val"}
    code, _, err = run_cli(capsys, "report", run)
    assert code == 0, err


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([1, 2], "expected a JSON object"),
        ({"model_type": "gpt2", "n_embd": "32", "layer_norm_epsilon": "x"}, "wrong type"),
        ({"model_type": "gpt2", "n_embd": "32"}, "model.n_embd"),
        ({"model_type": "gpt2", "n_layer": 1.5}, "model.n_layer"),
    ],
)
def test_import_of_a_malformed_config_json(tmp_path, capsys, config, message):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(
        capsys, "import", tmp_path / "hf", "--tokenizer", "gpt2", "--out", tmp_path / "ckpt"
    )
    assert_one_line_error(code, err, "config.json", message)


# --- 7. import checks sizes before allocating -------------------------------------------

PEAK = textwrap.dedent(
    """
    import resource, sys
    from tinylm.cli import main
    code = main(sys.argv[1:])
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)
    sys.exit(code)
    """
)


@pytest.mark.parametrize(
    ("config", "weights", "message"),
    [
        ({"n_embd": 2**20, "n_head": 2, "n_positions": 10**6}, True, "does not match its weight"),
        ({"n_layer": 60_000}, False, "no model.safetensors"),
        ({"n_embd": 10**9}, True, "model.n_embd"),
    ],
)
def test_import_refuses_a_huge_config_before_allocating(tmp_path, config, weights, message):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", **config}))
    if weights:
        safetensors.torch.save_file(
            {"wte.weight": torch.zeros(4, 4)}, str(hf / "model.safetensors")
        )
    result = subprocess.run(
        [sys.executable, "-c", PEAK, "import", str(hf), "--tokenizer", "gpt2", "--out",
         str(tmp_path / "ckpt")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    *lines, peak_mb = result.stderr.strip().splitlines()
    assert_one_line_error(result.returncode, "\n".join(lines), message)
    assert int(peak_mb) < 1500  # torch and the GPT-2 vocabulary, no model


# --- 8. silently accepted ---------------------------------------------------------------


def test_a_key_given_twice_in_a_config_file(tmp_path, capsys):
    config = tmp_path / "twice.yaml"
    config.write_text("optim:\n  lr: 1e-3\ntrain:\n  seed: 1\n  batch_size: 4\n  seed: 2\n")
    code, _, err = run_cli(capsys, "train", config, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "twice.yaml, line 6", "'seed' appears twice")


def test_a_damaged_metrics_line_is_refused_not_cut_short(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[5] = lines[5][:20]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(capsys, "report", run)
    assert_one_line_error(code, err, "metrics.jsonl:6", "damaged")
    # A partial last line (a kill mid-write) is only skipped.
    (run / "metrics.jsonl").write_text("\n".join([*lines[:5], *lines[6:], lines[5]]))
    code, _, err = run_cli(capsys, "report", run)
    assert code == 0, err


@pytest.mark.parametrize("flag", ["--temperature=-1", "--top-k=-1", "--top-p=nan"])
def test_sampling_settings_out_of_range(tiny_run, capsys, flag):
    code, _, err = run_cli(capsys, "generate", tiny_run, flag)
    assert_one_line_error(code, err, flag.split("=")[0], "out of range")


# --- 9. paths from metadata stay inside their directory ---------------------------------


@pytest.mark.parametrize("where", ["shard", "tokenizer"])
def test_a_manifest_cannot_name_a_file_outside_its_dataset(wiki_data, tmp_path, capsys, where):
    data = tmp_path / "data"
    shutil.copytree(wiki_data, data)
    (tmp_path / "secret").write_bytes(b"\x00" * 64)
    manifest = json.loads((data / "manifest.json").read_text())
    if where == "shard":
        manifest["splits"]["val"]["shards"][0]["file"] = "../secret"
        command = ["data", "stats", data]
    else:
        manifest["tokenizer"]["file"] = "/etc/hostname"
        command = ["train", f"data.path={data}", *TINY, "--out", tmp_path / "run"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capsys, *command)
    assert_one_line_error(code, err, "manifest.json")
    assert "outside" in err or "not a path relative" in err


def test_a_weight_index_cannot_name_a_file_outside_its_directory(tmp_path, capsys):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 32, "n_head": 2}))
    index = {"weight_map": {"wte.weight": "../../../../../../etc/hostname"}}
    (hf / "model.safetensors.index.json").write_text(json.dumps(index))
    code, _, err = run_cli(capsys, "import", hf, "--tokenizer", "gpt2", "--out", tmp_path / "c")
    assert_one_line_error(code, err, "index.json", "outside")


# --- 10. the memory bound of a text file without newlines -------------------------------


def test_a_text_file_without_newlines_is_cut_into_bounded_documents(tmp_path):
    text = ("tinylm reads text, 🦙 and € included; " * 600_000)[:-1]  # ~23 MB, no newline
    file = tmp_path / "one-line.txt"
    file.write_text(text)
    with open(file, "rb") as f:
        docs = list(_read_text(file, f, SourceOptions(), SourceCounts()))
    assert len(docs) >= 3
    assert all(len(d.text.encode()) <= 8 << 20 for d in docs)
    assert "".join(d.text for d in docs) == text  # cut between characters, nothing lost


# --- 11. a malicious pickle -------------------------------------------------------------


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])  # 5: torch warns of it
def test_a_pickle_that_runs_code_is_refused_in_one_line(tmp_path, capsys, protocol):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 32, "n_head": 2}))
    buffer = io.BytesIO()
    torch.save({"wte.weight": _RunsCode()}, buffer, pickle_protocol=protocol)
    (hf / "pytorch_model.bin").write_bytes(buffer.getvalue())
    code, out, err = run_cli(capsys, "import", hf, "--tokenizer", "gpt2", "--out", tmp_path / "c")
    assert_one_line_error(code, err, "pytorch_model.bin", "refused")
    if protocol == 2:  # the unpickler names what it would have called
        assert "posix.system" in err
    assert len(err.strip().splitlines()) == 1 and "weights_only" not in err
    assert "pwned" not in out


def test_a_prepared_dataset_still_prepares(tmp_path):
    """The guards above leave the plain path as it was (a smoke check of prepare)."""
    manifest = prepare(
        PrepareOptions(sources=["builtin:wiki"], out=tmp_path / "d", tokenizer="bytes")
    )
    assert manifest["splits"]["train"]["tokens"] > 0


# --- 6. (continued) damaged metadata a command reads ------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: b"\xff\xfe{",
        lambda m: b"[1]",
        lambda m: {**m, "splits": [1]},
        lambda m: {**m, "tokenizer": None},
        lambda m: {**m, "dtype": "<q9"},
        lambda m: {**m, "tokenizer": {**m["tokenizer"], "fingerprint": None}},
        lambda m: {**m, "splits": {"train": {"documents": 1, "tokens": 1}}},
    ],
)
def test_a_damaged_manifest_is_one_line(wiki_data, tmp_path, capsys, damage):
    data = tmp_path / "data"
    shutil.copytree(wiki_data, data)
    damaged = damage(json.loads((data / "manifest.json").read_text()))
    text = damaged if isinstance(damaged, bytes) else json.dumps(damaged).encode()
    (data / "manifest.json").write_bytes(text)
    for command in (
        ["data", "stats", data],
        ["train", f"data.path={data}", *TINY, "--out", tmp_path / "r"],
    ):
        code, _, err = run_cli(capsys, *command)
        assert_one_line_error(code, err, "manifest.json")


@pytest.mark.parametrize(("file", "text"), [("config.yaml", "[1, 2]\n"), ("config.yaml", ""),
                                            ("checkpoints/latest/meta.json", "{")])  # fmt: skip
def test_report_of_a_run_with_damaged_files_is_one_line(tiny_run, tmp_path, capsys, file, text):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    target = (run / file).resolve()
    target.unlink()
    target.write_text(text)
    code, _, err = run_cli(capsys, "report", run)
    assert_one_line_error(code, err, target.name)


# --- 4. (continued) a kill during prepare --overwrite -----------------------------------


def test_a_kill_during_prepare_overwrite_puts_the_dataset_back(tmp_path):
    out = tmp_path / "data"
    command = [sys.executable, "-m", "tinylm", "prepare", "builtin:wiki", "--tokenizer", "bytes",
               "--workers", "1", "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    manifest = (out / "manifest.json").read_text()
    env = {**os.environ, KILL_ENV: "replace:set-aside"}
    killed = subprocess.run([*command, "--overwrite", "--split", "90,5,5"], env=env, timeout=300)
    assert killed.returncode == -9 and not out.exists()  # the window: set aside, not replaced
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2  # the same dataset is there again, so it refuses to redo it
    assert "restored the dataset an interrupted --overwrite had set aside" in again.stderr
    assert (out / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# --- 7. (continued) train checks the model's size before allocating it -----------------


def test_a_model_too_large_for_memory_is_refused_before_allocating(wiki_data, tmp_path, capsys):
    out = tmp_path / "run"
    huge = ["model.n_embd=65536", "model.n_head=2", "model.n_layer=2"]  # ~110 G parameters
    code, _, err = run_cli(capsys, "train", f"data.path={wiki_data}", *TINY, *huge, "--out", out)
    assert_one_line_error(code, err, "parameters", "GiB free", "model.n_embd")
    assert not out.exists()


# --- 6. (continued) numbers inside string flags -----------------------------------------


@pytest.mark.parametrize(
    "flag",
    [
        ["--weights", "inf"],  # was an OverflowError
        ["--weights", "1e308"],  # was 1e308 copies of each document, until the disk was full
        ["--weights", "nan"],
        ["--weights", "-1"],
        ["--split", "inf,1,1"],  # was accepted (NaN shares)
        ["--split", "nan,1,1"],
        ["--split", "1e308,1e308,1"],
        ["--split", "1,2"],
    ],
)
def test_numbers_inside_prepare_flags(tmp_path, capsys, flag):
    out = tmp_path / "data"
    code, _, err = run_cli(capsys, "prepare", "builtin:wiki", "--tokenizer", "bytes", *flag,
                           "--out", out)  # fmt: skip
    assert_one_line_error(code, err, flag[0])
    assert list(tmp_path.iterdir()) == []


def test_a_huge_bpe_vocabulary_is_refused_before_the_trainer_allocates(tmp_path, capsys):
    """2**32 passed the old check and aborted the Rust trainer (283 GB allocation)."""
    code, _, err = run_cli(
        capsys, "tokenizer", "train", "builtin:wiki", "--vocab-size", 2**32, "--out", tmp_path / "t"
    )
    assert_one_line_error(code, err, "--vocab-size")
    assert not (tmp_path / "t").exists()
