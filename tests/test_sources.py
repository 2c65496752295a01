"""Every source type, read for real, and every bad input as one clear line."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tinylm.data import sources
from tinylm.data.prepare import PrepareOptions, prepare
from tinylm.data.sources import SourceCounts, SourceOptions, iter_documents
from tinylm.errors import TinyLMError

RECORDS = [{"id": i, "body": f"Record {i} says something."} for i in range(5)]
BODY = SourceOptions(text_field="body")


def texts(spec, options=BODY, counts=None):
    return [d.text for d in iter_documents(str(spec), options, counts)]


def write_jsonl(path, records=RECORDS):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_text_files_directories_and_recursive_globs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.txt").write_text("one")
    (tmp_path / "a" / "b" / "two.md").write_text("two")
    (tmp_path / "a" / "b" / "skip.bin").write_text("not scanned")
    assert texts(tmp_path / "a") == ["two", "one"]  # sorted by path: a/b/two.md < a/one.txt
    assert texts(f"{tmp_path}/a/**/*.md") == ["two"]
    with pytest.raises(TinyLMError, match="matches no files"):
        texts(f"{tmp_path}/a/**/*.rst")


def test_jsonl_json_array_and_compressed(tmp_path):
    expected = [r["body"] for r in RECORDS]
    assert texts(write_jsonl(tmp_path / "r.jsonl")) == expected
    (tmp_path / "r.json").write_text(json.dumps(RECORDS))
    assert texts(tmp_path / "r.json") == expected
    data = (tmp_path / "r.jsonl").read_bytes()
    (tmp_path / "r.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "r.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(b"plain text"))
    assert texts(tmp_path / "r.jsonl.gz") == texts(tmp_path / "r.jsonl.zst") == expected
    assert texts(tmp_path / "t.txt.gz") == ["plain text"]


def test_parquet(tmp_path):
    pq.write_table(pa.table({"body": [r["body"] for r in RECORDS]}), tmp_path / "r.parquet")
    assert texts(tmp_path / "r.parquet") == [r["body"] for r in RECORDS]
    with pytest.raises(TinyLMError, match="no column 'text'"):
        texts(tmp_path / "r.parquet", SourceOptions())


def test_hf_datasets_on_local_json_and_parquet(tmp_path):
    """The real datasets.load_dataset path (streaming), on local files: no hub."""
    write_jsonl(tmp_path / "r.jsonl")
    pq.write_table(pa.table({"body": [r["body"] for r in RECORDS]}), tmp_path / "r.parquet")
    expected = [r["body"] for r in RECORDS]
    assert texts(f"hf:{tmp_path / 'r.jsonl'}") == expected
    assert texts(f"hf:{tmp_path / 'r.parquet'}") == expected
    with pytest.raises(TinyLMError, match="hf:.*could not load"):
        texts(f"hf:{tmp_path / 'missing-dataset'}")


def test_builtin_corpora(tmp_path):
    shakespeare = list(iter_documents("builtin:shakespeare"))
    bible = list(iter_documents("builtin:bible"))
    assert len(shakespeare) == 42 and "Prospero" in " ".join(d.text[:3000] for d in shakespeare)
    assert len(bible) == 1189 and bible[0].text.startswith("1 In the beginning God created")
    mix = sum(1 for _ in iter_documents("builtin:mix"))
    assert mix == len(shakespeare) + len(bible) + 249 + sum(
        1 for _ in iter_documents("builtin:wiki")
    )
    with pytest.raises(TinyLMError, match="available: builtin:sotu"):
        texts("builtin:nope")


# --- bad input ---------------------------------------------------------------------------


def test_binary_file_is_refused(tmp_path):
    (tmp_path / "x.txt").write_bytes(b"ELF\x00\x01\x02")
    with pytest.raises(TinyLMError, match="binary file"):
        texts(tmp_path / "x.txt")


def test_invalid_utf8_fails_or_is_skipped_and_counted(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"body": "good"}\n{"body": "caf\xe9"}\n')
    with pytest.raises(TinyLMError, match=r"a.jsonl:2: not valid UTF-8 at byte .*=skip"):
        texts(tmp_path / "a.jsonl")
    counts = SourceCounts()
    skip = SourceOptions(text_field="body", on_invalid_utf8="skip")
    assert texts(tmp_path / "a.jsonl", skip, counts) == ["good"]
    assert counts.skipped["invalid_utf8"] == 1
    m = prepare(
        PrepareOptions(
            [str(tmp_path / "a.jsonl")], tmp_path / "d", split=(1, 0, 0), source_options=skip
        )  # fmt: skip
    )
    assert m["sources"][0]["invalid_utf8"] == 1


def test_missing_field_empty_source_corrupt_parquet_and_gzip(tmp_path):
    write_jsonl(tmp_path / "r.jsonl")
    with pytest.raises(TinyLMError, match=r"r.jsonl:1: no field 'text' \(found: id, body\)"):
        texts(tmp_path / "r.jsonl", SourceOptions())
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(TinyLMError, match="empty.txt: no documents"):
        prepare(PrepareOptions([str(tmp_path / "empty.txt")], tmp_path / "d"))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    with pytest.raises(TinyLMError, match="bad.parquet: not a readable Parquet file"):
        texts(tmp_path / "bad.parquet")
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"body": "x"}\n' * 100)[:-20])
    with pytest.raises(TinyLMError, match="bad.jsonl.gz: corrupt compressed file"):
        texts(tmp_path / "bad.jsonl.gz")
    assert not (tmp_path / "d").exists()


def test_a_huge_text_file_is_cut_at_blank_lines(tmp_path, monkeypatch):
    """Memory stays bounded for one giant .txt: pieces past TEXT_PIECE bytes, at blank lines."""
    monkeypatch.setattr(sources, "TEXT_PIECE", 100)
    paragraphs = [f"Paragraph {i} line one.\nLine two of {i}.\n" for i in range(20)]
    (tmp_path / "big.txt").write_text("\n".join(paragraphs))
    docs = list(iter_documents(str(tmp_path / "big.txt")))
    assert 5 < len(docs) < 20 and all(d.text.endswith("\n\n") for d in docs[:-1])
    assert "".join(d.text for d in docs) == "\n".join(paragraphs)
    (tmp_path / "bad.txt").write_bytes(b"x" * 150 + b"\n\n" + b"caf\xe9\n")
    with pytest.raises(TinyLMError, match="bad.txt: not valid UTF-8 at byte 155"):
        list(iter_documents(str(tmp_path / "bad.txt")))
