"""`tinylm sweep` and multi-run reports: expansion and naming, a real two-run sweep
interrupted and resumed, and a report whose numbers are checked against the run dirs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY_OVERRIDES

from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.sweep import load_sweep

STEPS = 12


def write_sweep(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_grid_list_and_scale_expand_to_named_runs_in_override_order(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("optim:\n  lr: 1.0e-3\n")
    sweep_file = write_sweep(
        tmp_path / "s.yaml",
        {
            "base": "base.yaml",
            "out": str(tmp_path / "runs"),
            "set": {"train.epochs": 1},
            "runs": [{"name": "small"}, {"name": "wide", "model.n_embd": 256}],
            "grid": {"train.seed": [0, 1]},
            "scales": {"cpu": {"set": {"train.epochs": 3}}},
        },
    )
    sweep = load_sweep(sweep_file, scale="cpu", extra=["train.device=cpu"])
    assert sweep.base == base
    assert sweep.out == tmp_path / "runs-cpu"  # a scale's runs go beside the others
    names = [r.name for r in sweep.runs]
    assert names == ["small_seed-0", "small_seed-1", "wide_seed-0", "wide_seed-1"]
    wide1 = sweep.runs[3]
    # common set, the run's own settings, its grid point, the scale, the command line
    assert wide1.overrides == [
        "train.epochs=1",
        "model.n_embd=256",
        "train.seed=1",
        "train.epochs=3",
        "train.device=cpu",
    ]
    assert wide1.out == tmp_path / "runs-cpu" / "wide_seed-1"
    assert load_sweep(sweep_file).out == tmp_path / "runs"


def test_unnamed_runs_are_named_after_what_differs(tmp_path):
    sweep_file = write_sweep(
        tmp_path / "s.yaml",
        {
            "set": {"train.epochs": 1},
            "grid": {
                "optim.lr": [5.0e-4, 1.0e-3],
                "model.dropout": [0.0],
                "optim.schedule": ["wsd"],
            },
        },
    )
    sweep = load_sweep(sweep_file)
    assert [r.name for r in sweep.runs] == ["lr-0.0005", "lr-0.001"]
    assert sweep.out == Path("runs/s")
    assert load_sweep(sweep_file, out=tmp_path / "o").runs[0].out == tmp_path / "o" / "lr-0.0005"


@pytest.mark.parametrize(
    ("spec", "scale", "message"),
    [
        ({"grid": {"optim.lr": 0.1}}, None, "grid.optim.lr must be a non-empty list"),
        ({"runs": [{"optim.lr": 1}, {"optim.lr": 1}]}, None, "both be named"),
        ({"runs": [{}], "sets": {}}, None, "unknown key(s) sets"),
        ({"scales": {"cpu": {}}}, "gpu", "no scale 'gpu' (scales: cpu)"),
        ({"base": "missing.yaml"}, None, "does not exist"),
        ({"prepare": "prepare builtin:wiki"}, None, "must name its --out"),
        ({"runs": [{"name": "a/b"}]}, None, "cannot name a directory"),
        ({"runs": [{"name": "logs"}]}, None, "cannot name a directory"),
        # Values of the wrong shape (each was a TypeError traceback):
        ({"base": 5}, None, "base must be a path"),
        ({"base": ["a.yaml", "b.yaml"]}, None, "base must be a path"),
        ({"out": 5}, None, "out must be a path"),
        ({"prepare": 5}, None, "prepare must be a tinylm command line or a list of them"),
        ({"prepare": [["prepare", "--out", "d"]]}, None, "prepare must be a tinylm command"),
        ({"scales": 5}, None, "scales must be a mapping"),
        ({"scales": {"cpu": 5}}, "cpu", "scales.cpu must be a mapping"),
        ({"scales": {"cpu": {"out": 5}}}, "cpu", "scales.cpu: out must be a path"),
    ],
)
def test_bad_sweep_files_are_refused_in_one_line(tmp_path, spec, scale, message):
    sweep_file = write_sweep(tmp_path / "s.yaml", spec)
    with pytest.raises(TinyLMError) as err:
        load_sweep(sweep_file, scale=scale)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_bad_setting_fails_before_any_run_starts(tmp_path, capsys):
    sweep_file = write_sweep(
        tmp_path / "s.yaml",
        {"out": str(tmp_path / "runs"), "runs": [{"optim.lr": 1e-3}, {"optim.lrr": 1e-3}]},
    )
    assert main(["sweep", str(sweep_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinylm sweep: error: run lrr-0.001: ") and "lrr" in err
    assert not (tmp_path / "runs").exists()


def test_sweep_resumes_after_interruption_and_reports_both_runs(wiki_data, tmp_path):
    out = tmp_path / "runs"
    sweep_file = write_sweep(
        tmp_path / "tiny.yaml",
        {
            "out": str(out),
            "eval": ["val", "test"],
            "set": {
                "data.path": str(wiki_data),
                **dict(o.split("=", 1) for o in TINY_OVERRIDES),
                "train.max_steps": STEPS,
                "train.eval_interval": 6,
                "train.checkpoint_interval": 2,
                "train.num_threads": 1,
                "train.tensorboard": False,
            },
            "grid": {"optim.lr": [1.0e-3, 3.0e-3]},
        },
    )
    cmd = [sys.executable, "-m", "tinylm", "sweep", str(sweep_file)]
    first, second = out / "lr-0.001", out / "lr-0.003"

    # 1. SIGTERM to the whole job while the first run trains, as a scheduler sends it: the
    # run gets it twice (directly and relayed by the sweep), saves a checkpoint of its last
    # step anyway, and the sweep stops (130).
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (first / "checkpoints" / "latest").exists() or train_steps(first)[-1:] < [3]:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    os.kill(child_pid(str(first)), signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; run the same command to resume" in err and "Traceback" not in err
    stopped = meta(first)
    assert stopped["interrupted"] and stopped["stop_reason"] == "signal"
    assert stopped["step"] == train_steps(first)[-1] < STEPS  # no step lost
    assert not second.exists()

    # 2. The same sweep resumes the first run and starts the second, both at once (--jobs 2:
    # separate processes, each logging to OUT/logs/NAME.log).
    done = subprocess.run([*cmd, "--jobs", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "lr-0.001: interrupted earlier, resuming" in done.stderr
    assert "lr-0.003: starting" in done.stderr
    assert f"resumed at step {stopped['step']}" in (out / "logs" / "lr-0.001.log").read_text()
    assert "split" in (out / "logs" / "lr-0.003.log").read_text()  # its eval table
    for run in (first, second):
        assert train_steps(run) == list(range(1, STEPS + 1))  # no step lost or repeated
        assert meta(run)["stop_reason"] == "budget"

    # 3. Once more: nothing left to do; the run directories are untouched.
    before = {
        p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "report" not in p.name
    }
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("finished and evaluated, skipping") == 2
    assert {p: p.stat().st_mtime_ns for p in before} == before

    # 3b. An evaluation of an earlier checkpoint makes eval.json stale: the report leaves
    # those numbers out, and the sweep evaluates the final model again.
    older = sorted((first / "checkpoints").glob("step-*"))[0]
    assert meta(first)["step"] != int(older.name.split("-")[1])
    subprocess.run(
        [sys.executable, "-m", "tinylm", "eval", str(older), "--split", "val", "test"],
        capture_output=True, check=True,
    )  # fmt: skip
    stale = subprocess.run(
        [sys.executable, "-m", "tinylm", "report", str(out)], capture_output=True, text=True
    )
    assert stale.returncode == 0, stale.stderr
    row = next(line for line in stale.stdout.splitlines() if line.startswith("| lr-0.001 |"))
    assert row.endswith("| - | - | - | - | - | - |")  # no val/test numbers of another step
    fresh = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    assert "lr-0.001: finished, evaluating" in fresh.stderr
    assert "lr-0.003: finished and evaluated, skipping" in fresh.stderr
    assert json.loads((first / "eval.json").read_text())["val"]["step"] == STEPS

    # 4. The report's numbers are those in each run directory.
    rows = {r["run"]: r for r in csv.DictReader((out / "report.csv").open())}
    report_md = (out / "report.md").read_text()
    assert set(rows) == {"lr-0.001", "lr-0.003"}
    for run in (first, second):
        row, m = rows[run.name], meta(run)
        evals = json.loads((run / "eval.json").read_text())
        vals = [r["val_loss"] for r in records(run) if r["kind"] == "val"]
        assert int(row["tokens"]) == m["tokens_seen"] == STEPS * 8 * 32
        assert int(row["params"]) == m["num_parameters"]
        assert float(row["train_loss"]) == pytest.approx(m["train_loss"], rel=1e-12)
        assert float(row["best_val_loss"]) == pytest.approx(min(vals), rel=1e-12)
        for split in ("val", "test"):
            assert float(row[f"{split}_loss"]) == pytest.approx(evals[split]["loss"], rel=1e-12)
            assert float(row[f"{split}_bpb"]) == pytest.approx(
                evals[split]["bits_per_byte"], rel=1e-12
            )
            assert f"{evals[split]['loss']:.4f}" in report_md
        assert row["settings"] == f"optim.lr={m_lr(run)}"
    assert rows["lr-0.001"]["val_loss"] != rows["lr-0.003"]["val_loss"]
    for png in ("report-loss-vs-tokens.png", "report-loss-vs-time.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in report_md


def test_rerunning_a_finished_run_changes_nothing(tiny_run, capsys):
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    files = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*") if p.is_file()}
    settings = [f"{s}.{k}={json.dumps(v) if not isinstance(v, str) else v}"
                for s, fields in config.items() for k, v in fields.items()]  # fmt: skip
    assert main(["train", *settings, "--out", str(tiny_run)]) == 0
    assert "finished already (budget at step 30)" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in files} == files


def child_pid(marker: str) -> int:
    """The pid of the `tinylm train` process whose command line names `marker`."""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"train" in args and marker.encode() in args:
            return int(proc.name)
    raise AssertionError(f"no train process for {marker}")


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def train_steps(run: Path) -> list[int]:
    if not (run / "metrics.jsonl").is_file():
        return []
    steps = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            break
        if record["kind"] == "train":
            steps.append(record["step"])
    return steps


def meta(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "latest" / "meta.json").read_text())


def m_lr(run: Path) -> str:
    return f"{yaml.safe_load((run / 'config.yaml').read_text())['optim']['lr']:g}"


def test_a_run_directory_with_another_config_is_refused(tiny_run, wiki_data):
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    same = {f"{s}.{k}": v for s, fields in config.items() for k, v in fields.items()}
    sweep_file = write_sweep(
        tiny_run.parent / "s.yaml",
        {"out": str(tiny_run.parent), "runs": [{"name": "tiny", **same}]},
    )
    sweep = load_sweep(sweep_file)
    assert sweep.status(sweep.runs[0]) in ("trained", "done")  # same config: accepted
    changed = load_sweep(sweep_file, extra=["optim.lr=0.01"])
    with pytest.raises(TinyLMError, match=r"holds a run with another config \(optim.lr differ\)"):
        changed.status(changed.runs[0])


def test_runs_with_their_own_base_are_evaluated_on_other_data_too(wiki_data, tmp_path, capsys):
    # An out-of-domain set prepared with the runs' tokenizer, found from each run's data.path.
    ood = Path(f"{wiki_data}-ood")
    if not ood.exists():
        text = tmp_path / "ood.txt"
        text.write_text("Now is the winter of our discontent\nMade glorious summer.\n" * 40)
        assert main(["prepare", str(text), "--split", "0,0,1", "--out", str(ood)]) == 0
    tiny = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in TINY_OVERRIDES)}
    del tiny["optim.lr"]  # each base sets its own
    for name, lr in (("a.yaml", 3e-3), ("b.yaml", 1e-3)):
        (tmp_path / name).write_text(yaml.safe_dump({"optim": {"lr": lr}}))
    out = tmp_path / "runs"
    sweep_file = write_sweep(
        tmp_path / "s.yaml",
        {
            "base": "a.yaml",
            "out": str(out),
            "eval": ["val"],
            "eval_data": ["{data}-ood:test"],
            "set": {"data.path": str(wiki_data), **tiny, "train.max_steps": 4},
            "runs": [{"name": "a"}, {"name": "b", "base": "b.yaml"}],
        },
    )
    sweep = load_sweep(sweep_file)
    assert [r.base.name for r in sweep.runs] == ["a.yaml", "b.yaml"]
    assert sweep.other_data(sweep.runs[1]) == {str(ood): ["test"]}
    assert main(["sweep", str(sweep_file)]) == 0
    for name, lr in (("a", 3e-3), ("b", 1e-3)):
        assert yaml.safe_load((out / name / "config.yaml").read_text())["optim"]["lr"] == lr
        results = json.loads((out / name / "eval.json").read_text())
        assert results[f"{ood}:test"]["step"] == 4 and results[f"{ood}:test"]["bits_per_byte"] > 0
        assert results["val"]["dataset"] == str(wiki_data)
        assert sweep.status(next(r for r in sweep.runs if r.name == name)) == "done"
    capsys.readouterr()
    assert main(["sweep", str(sweep_file)]) == 0  # nothing left to do
    assert capsys.readouterr().err.count("finished and evaluated, skipping") == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"eval_data": "d:test"}, "eval_data must be a list of DATASET:SPLIT"),
        ({"eval_data": ["d"]}, "eval_data must be a list of DATASET:SPLIT"),
        ({"eval_data": ["d:dev"]}, "eval_data must be a list of DATASET:SPLIT"),
        ({"runs": [{"name": "x", "base": 3}]}, "runs: base must be a path"),
        ({"runs": [{"name": "x", "base": "nope.yaml"}]}, "nope.yaml does not exist"),
    ],
)
def test_bad_eval_data_and_run_bases_are_refused(tmp_path, spec, message):
    sweep_file = write_sweep(tmp_path / "s.yaml", spec)
    with pytest.raises(TinyLMError, match=message):
        load_sweep(sweep_file)
