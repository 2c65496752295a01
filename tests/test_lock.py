"""One writer per run and per dataset, with real concurrent `tinylm` processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import TINY_OVERRIDES

from tinylm.errors import TinyLMError
from tinylm.lock import hold_lock, lock_path

TINYLM = [sys.executable, "-m", "tinylm"]
# Holds a directory's lock in a separate process until killed.
HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from tinylm.lock import hold_lock\n"
    "with hold_lock(Path(sys.argv[1]), 'dataset'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(600)\n"
)


def wait_for_holder(target, pid, timeout=120.0):
    """Until `pid` holds target's lock (its PID is in the lock file)."""
    path = lock_path(target)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip() == str(pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"{pid} never took {path}")


def one_error_line(result):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_second_train_on_a_run_is_refused_naming_the_first(tmp_path, wiki_data):
    out = tmp_path / "run"
    args = [*TINYLM, "train", f"data.path={wiki_data}", *TINY_OVERRIDES, "train.tensorboard=false"]
    first = subprocess.Popen(
        [*args, "train.max_steps=100000", "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_holder(out, first.pid)
        # The same command (a resume) and a start-over both meet the lock.
        for extra in ([], ["--overwrite"]):
            second = subprocess.run(
                [*args, "train.max_steps=100000", "--out", str(out), *extra],
                capture_output=True,
                text=True,
                timeout=120,
            )
            line = one_error_line(second)
            assert f"process {first.pid} is writing this run" in line, line
        assert first.poll() is None  # the first one never noticed
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err  # interrupted, with its checkpoint saved
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert records and all(json.loads(line)["step"] > 0 for line in records)  # one writer
    assert not lock_path(out).exists()  # released and removed on a clean exit


def test_second_prepare_on_a_dataset_is_refused(tmp_path):
    out = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = subprocess.run(
            [*TINYLM, "prepare", "builtin:wiki", "--tokenizer", "bytes", "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        line = one_error_line(result)
        assert f"process {holder.pid} is writing this dataset" in line, line
        assert not out.exists() and not (tmp_path / ".data.partial").exists()  # untouched
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL released it: the next prepare goes ahead.
    result = subprocess.run(
        [*TINYLM, "prepare", "builtin:wiki", "--tokenizer", "bytes", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no lock, no partial


def test_two_prepares_of_one_dataset_the_second_is_refused(tmp_path):
    """The issue's case: two real `tinylm prepare` runs on one --out. The first (a 36 MB
    corpus, a few seconds) finishes a consistent dataset; the second is refused."""
    corpus = tmp_path / "corpus.jsonl"
    words = ["alpha", "beta", "gamma", "delta", "tiny", "model", "token", "shard", "lock"]
    with open(corpus, "w") as f:
        for i in range(60_000):
            text = " ".join(words[(i * 7 + j * j) % len(words)] for j in range(100))
            f.write(json.dumps({"text": f"{text} {i}"}) + "\n")
    out = tmp_path / "data"
    command = [*TINYLM, "prepare", str(corpus), "--workers", "1", "--out", str(out)]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    wait_for_holder(out, first.pid)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    line = one_error_line(second)
    assert f"process {first.pid} is writing this dataset" in line, line
    from tinylm.data.dataset import PreparedDataset

    dataset = PreparedDataset.open(out)
    for split in dataset.splits:  # every shard's size agrees with the manifest
        assert len(dataset.tokens(split)) == dataset.splits[split]["tokens"]


def test_lock_is_released_by_death_and_refuses_in_process(tmp_path):
    target = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    refused = f"process {holder.pid} is writing this run"
    with pytest.raises(TinyLMError, match=refused), hold_lock(target, "run"):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(target).read_text().strip() == str(holder.pid)  # a stale file stays
    with hold_lock(target, "run"):
        assert lock_path(target).read_text().strip() == str(os.getpid())
    assert not lock_path(target).exists()
