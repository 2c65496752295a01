import json
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinylm.data.clean import CleanOptions, clean_text
from tinylm.data.dataset import PreparedDataset
from tinylm.data.prepare import PrepareOptions, parse_split, prepare, split_of
from tinylm.data.sources import SourceOptions, iter_documents
from tinylm.data.tokenizer import get_tokenizer
from tinylm.errors import TinyLMError

DOCS = [
    (f"Document number {i}. " + f"Some words about topic {i}. " * (i % 5 + 1)).strip()
    for i in range(60)
]


def write_corpus(root, docs=DOCS):
    """Half the documents as .txt files in nested folders, half as JSONL records."""
    half = len(docs) // 2
    for i, doc in enumerate(docs[:half]):
        folder = root / "texts" / f"part{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.txt").write_text(doc)
    with open(root / "records.jsonl", "w") as f:
        for doc in docs[half:]:
            f.write(json.dumps({"id": 1, "body": doc}) + "\n")
    return [str(root / "texts"), str(root / "records.jsonl")]


def split_documents(dataset, split):
    """Decode a split back into documents by cutting at <|endoftext|>."""
    tok = get_tokenizer("gpt2")
    tokens = dataset.tokens(split).tolist()
    assert not tokens or tokens[-1] == tok.eot_id  # every document ends with EOT
    docs, current = [], []
    for t in tokens:
        if t == tok.eot_id:
            docs.append(tok.decode(current))
            current = []
        else:
            current.append(t)
    return docs


def run_prepare(sources, out, **kw):
    opts = PrepareOptions(
        sources=sources,
        out=out,
        source_options=SourceOptions(text_field="body"),
        split=(0.6, 0.2, 0.2),
        **kw,
    )
    return prepare(opts)


def test_split_by_document_with_eot_and_manifest(tmp_path):
    manifest = run_prepare(write_corpus(tmp_path), tmp_path / "out")
    ds = PreparedDataset.open(tmp_path / "out")
    seen = []
    for split in ("train", "val", "test"):
        docs = split_documents(ds, split)
        info = manifest["splits"][split]
        assert len(docs) == info["documents"] > 0
        assert len(ds.tokens(split)) == info["tokens"]
        assert info["text_bytes"] == sum(len(d.encode()) for d in docs)
        assert all(split_of(d, 1337, (0.6, 0.2, 0.2)) == split for d in docs)
        seen += docs
    assert sorted(seen) == sorted(DOCS)  # each document whole, in exactly one split
    assert manifest["tokenizer"]["name"] == "gpt2"
    assert manifest["tokenizer"]["fingerprint"] == get_tokenizer("gpt2").fingerprint
    assert manifest["dtype"] == "<u2" and manifest["seed"] == 1337
    assert [s["documents"] for s in manifest["sources"]] == [30, 30]


def test_same_inputs_give_identical_bytes(tmp_path):
    sources = write_corpus(tmp_path)
    run_prepare(sources, tmp_path / "a")
    run_prepare(sources, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["manifest.json", "test-00000.bin", "train-00000.bin", "val-00000.bin"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_split_of_a_document_does_not_depend_on_the_others():
    fractions = (0.5, 0.25, 0.25)
    assignments = {d: split_of(d, 7, fractions) for d in DOCS}
    assert set(assignments.values()) == {"train", "val", "test"}
    assert {split_of(d, 8, fractions) for d in DOCS} != assignments  # the seed matters
    assert all(split_of(d, 7, fractions) == s for d, s in assignments.items())


def test_builtin_corpora_read_offline(tmp_path):
    m = prepare(PrepareOptions(sources=["builtin:sotu"], out=tmp_path / "sotu"))
    assert m["sources"][0]["documents"] == 249
    assert 2_200_000 < sum(s["tokens"] for s in m["splits"].values()) < 2_600_000


def test_builtin_wiki(wiki_data):
    m = PreparedDataset.open(wiki_data).manifest
    assert m["sources"][0]["documents"] > 9_000
    assert 900_000 < sum(s["tokens"] for s in m["splits"].values()) < 1_200_000
    assert m["splits"]["val"]["documents"] > 50 and m["splits"]["test"]["documents"] > 50


def test_parse_split():
    assert parse_split("98,1,1") == pytest.approx((0.98, 0.01, 0.01))
    assert parse_split("0,0,1") == (0, 0, 1)  # an evaluation-only (out-of-domain) set
    for bad in ("90,10", "0,0,0", "-1,1,1", "nan,1,1"):
        with pytest.raises(TinyLMError, match="three non-negative numbers"):
            parse_split(bad)


def test_existing_dataset_kept_unless_overwrite(tmp_path):
    sources = write_corpus(tmp_path)
    run_prepare(sources, tmp_path / "out")
    before = (tmp_path / "out" / "train-00000.bin").read_bytes()
    with pytest.raises(TinyLMError, match="--overwrite"):
        run_prepare(sources, tmp_path / "out")
    # A failing overwrite (bad source) leaves the earlier dataset whole.
    with pytest.raises(TinyLMError, match="no such file"):
        run_prepare([*sources, str(tmp_path / "missing.txt")], tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "train-00000.bin").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    run_prepare(sources[:1], tmp_path / "out", overwrite=True)
    assert PreparedDataset.open(tmp_path / "out").manifest["sources"][0]["documents"] == 30


def test_tokens_file_size_checked(tmp_path):
    run_prepare(write_corpus(tmp_path), tmp_path / "out")
    with open(tmp_path / "out" / "val-00000.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(TinyLMError, match="prepare the dataset again"):
        PreparedDataset.open(tmp_path / "out").tokens("val")


def test_loaded_tokens_are_uint16(tmp_path):
    run_prepare(write_corpus(tmp_path), tmp_path / "out")
    assert PreparedDataset.open(tmp_path / "out").tokens("train").dtype == np.uint16


def test_jsonl_records_end_only_at_newline(tmp_path):
    """U+2028 and friends are legal raw inside JSON strings; they must not split a record."""
    (tmp_path / "a.jsonl").write_text(
        '{"text": "one\u2028record\u0085here"}\r\n{"text": "two"}\n', encoding="utf-8"
    )
    docs = list(iter_documents(str(tmp_path / "a.jsonl")))
    assert [d.text for d in docs] == ["one\u2028record\u0085here", "two"]


def test_directory_scan_skips_json_metadata_but_reads_it_when_named(tmp_path):
    (tmp_path / "a.txt").write_text("text")
    (tmp_path / "meta.json").write_text('{"license": "cc"}')
    assert [d.text for d in iter_documents(str(tmp_path))] == ["text"]
    with pytest.raises(TinyLMError, match="no field 'text'"):
        list(iter_documents(str(tmp_path / "meta.json")))


# --- corpus scale: parallel, shards, dedup, weights, growth, interruption, disk full -------


def test_one_or_two_worker_processes_give_identical_bytes(tmp_path):
    sources = write_corpus(tmp_path)
    run_prepare(sources, tmp_path / "one", workers=1, chunk_chars=200)
    run_prepare(sources, tmp_path / "two", workers=2, chunk_chars=200)  # many chunks in flight
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_shards_read_as_one_array_and_match_their_checksums(tmp_path):
    import hashlib

    m = run_prepare(write_corpus(tmp_path), tmp_path / "out", shard_tokens=100, chunk_chars=300)
    shards = m["splits"]["train"]["shards"]
    assert len(shards) > 3 and all(s["tokens"] >= 100 for s in shards[:-1])
    parts = []
    for s in shards:
        data = (tmp_path / "out" / s["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["sha256"]
        parts.append(np.frombuffer(data, dtype="<u2"))
    tokens = PreparedDataset.open(tmp_path / "out").tokens("train")
    whole = np.concatenate(parts)
    assert len(tokens) == len(whole) == m["splits"]["train"]["tokens"]
    assert np.array_equal(tokens[np.arange(len(whole))], whole)
    assert sorted(split_documents(PreparedDataset.open(tmp_path / "out"), "train")) == sorted(
        d for d in DOCS if split_of(d, 1337, (0.6, 0.2, 0.2)) == "train"
    )


def test_exact_duplicates_removed_after_cleaning_and_counted(tmp_path):
    (tmp_path / "a.txt").write_text("Same text.\r\nSecond line.  \n")
    (tmp_path / "b.txt").write_text("Same text.\nSecond line.")  # equal once cleaned
    (tmp_path / "c.txt").write_text("Other text.")
    (tmp_path / "d.txt").write_text("x")
    opts = dict(split=(1, 0, 0), out=tmp_path / "out")
    m = prepare(PrepareOptions(sources=[str(tmp_path)], **opts))
    src = m["sources"][0]
    assert (src["documents"], src["duplicates"], src["kept"]) == (4, 1, 3)
    assert m["splits"]["train"]["documents"] == 3
    m = prepare(
        PrepareOptions(
            sources=[str(tmp_path)],
            clean=CleanOptions(dedup=False, min_chars=2),
            overwrite=True,
            **opts,
        )
    )
    src = m["sources"][0]
    assert (src["duplicates"], src["too_short"], src["kept"]) == (0, 1, 3)


def test_cleaning_normalizes_unicode_controls_and_whitespace():
    text = "Cafe\u0301\x07 bar  \r\n\r\n\r\n\r\nend\x00 "
    assert clean_text(text, CleanOptions()) == "Caf\u00e9 bar\n\nend"
    assert clean_text("\ufb01ne", CleanOptions(normalize="NFKC")) == "fine"
    kept = CleanOptions(normalize="none", strip_control=False, normalize_whitespace=False)
    assert clean_text(text, kept) == text.replace("\x00", "")  # NUL always goes


def test_adding_documents_moves_no_document_between_splits(tmp_path):
    first = write_corpus(tmp_path / "a", DOCS[:30])
    run_prepare(first, tmp_path / "small")
    more = [f"A later document {i} about something else entirely." for i in range(40)]
    run_prepare(write_corpus(tmp_path / "b", DOCS[:30] + more), tmp_path / "big")
    small, big = PreparedDataset.open(tmp_path / "small"), PreparedDataset.open(tmp_path / "big")
    for split in ("train", "val", "test"):
        before = set(split_documents(small, split))
        assert before <= set(split_documents(big, split))  # still there, still in that split


def test_mixture_weights_repeat_or_thin_a_source(tmp_path):
    sources = write_corpus(tmp_path)
    m = run_prepare(sources, tmp_path / "w", weights=[2.0, 0.5])
    a, b = m["sources"]
    assert (a["kept"], a["written"]) == (30, 60)
    assert b["kept"] == 30 and 5 <= b["written"] <= 25  # about half, fixed by each doc's hash
    again = run_prepare(sources, tmp_path / "w2", weights=[2.0, 0.5])
    assert again["splits"] == m["splits"]
    with pytest.raises(TinyLMError, match="--weights"):
        run_prepare(sources, tmp_path / "w3", weights=[1.0])


def test_bytes_tokenizer_marks_document_ends_with_nul(tmp_path):
    m = run_prepare(write_corpus(tmp_path), tmp_path / "out", tokenizer="bytes")
    assert m["tokenizer"]["vocab_size"] == 256 and m["tokenizer"]["eot_id"] == 0
    ds = PreparedDataset.open(tmp_path / "out")
    raw = bytes(ds.tokens("train").tolist())
    docs = raw.split(b"\0")[:-1]
    assert raw.endswith(b"\0") and len(docs) == m["splits"]["train"]["documents"]
    assert {d.decode() for d in docs} <= set(DOCS)


def _prepare_cli(*args: str, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tinylm", "prepare", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_interrupted_prepare_leaves_nothing_complete_and_rerun_restarts(tmp_path):
    out = tmp_path / "sotu"
    partial = tmp_path / ".sotu.partial"
    proc = _prepare_cli("builtin:sotu", "--out", str(out), "--workers", "1")
    deadline = time.time() + 60
    while not any(partial.glob("train-*.bin")) and time.time() < deadline:
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no cleanup code runs
    proc.wait()
    assert not out.exists()  # no dataset, so nothing looks complete
    assert not (partial / "manifest.json").exists()
    proc = _prepare_cli("builtin:sotu", "--out", str(out), "--workers", "1")
    _, err = proc.communicate()
    assert proc.returncode == 0 and "interrupted prepare" in err
    assert not partial.exists()
    fresh = prepare(PrepareOptions(sources=["builtin:sotu"], out=tmp_path / "fresh"))
    assert PreparedDataset.open(out).manifest == fresh


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    def small_disk():  # writes past 300 kB fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    proc = _prepare_cli("builtin:sotu", "--out", str(tmp_path / "d"), preexec_fn=small_disk)
    _, err = proc.communicate()
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1].startswith("tinylm prepare: error: ")
    assert "disk full" in err and "free some space" in err
    assert list(tmp_path.iterdir()) == []


def test_data_stats_counts_documents_tokens_and_lengths(tmp_path, capsys):
    from tinylm.cli import main
    from tinylm.data.stats import dataset_stats

    m = run_prepare(write_corpus(tmp_path), tmp_path / "out", shard_tokens=50)
    ds = PreparedDataset.open(tmp_path / "out")
    stats = dataset_stats(ds, top=3)
    for split in ("train", "val", "test"):
        s, info = stats[split], m["splits"][split]
        docs = split_documents(ds, split)
        assert s["documents"] == len(docs) and s["tokens"] == info["tokens"]
        assert sum(n for *_, n in s["length_histogram"]) == len(docs)  # across shard ends
        assert s["top_tokens"][0] == (50256, len(docs)) or s["top_tokens"][0][1] >= len(docs)
        assert s["bytes_per_token"] == info["text_bytes"] / (info["tokens"] - len(docs))
    assert main(["data", "stats", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(m["description"]) and "bytes/token" in out and "top tokens:" in out


def test_killed_prepare_resumes_from_its_saved_position_to_identical_bytes(tmp_path):
    """kill -9 after some checkpoints; the same command continues and matches a clean run."""
    script = (
        "import sys; from pathlib import Path; "
        "from tinylm.data.prepare import PrepareOptions, prepare; "
        "prepare(PrepareOptions(['builtin:sotu'], Path(sys.argv[1]), chunk_chars=100_000, "
        "checkpoint_chunks=4, shard_tokens=300_000))"
    )
    out, partial = tmp_path / "out", tmp_path / ".out.partial"
    cmd = [sys.executable, "-c", script, str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if json.loads((partial / "progress.json").read_text())["chunks_done"] >= 20:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert not out.exists()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    assert proc.returncode == 0 and "resuming the interrupted prepare" in err
    opts = dict(chunk_chars=100_000, shard_tokens=300_000)
    fresh = prepare(PrepareOptions(["builtin:sotu"], tmp_path / "fresh", **opts))
    assert PreparedDataset.open(out).manifest == fresh
    assert len(fresh["splits"]["train"]["shards"]) > 3
    for shard in fresh["splits"]["train"]["shards"]:
        assert (out / shard["file"]).read_bytes() == (
            tmp_path / "fresh" / shard["file"]
        ).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in (tmp_path / "fresh").iterdir()
    )
