import json

import numpy as np
import pytest

from tinylm.data.dataset import PreparedDataset
from tinylm.data.prepare import PrepareOptions, parse_split, prepare, split_of
from tinylm.data.sources import SourceOptions, iter_documents
from tinylm.data.tokenizer import get_tokenizer
from tinylm.errors import TinyLMError

DOCS = [f"Document number {i}. " + f"Some words about topic {i}. " * (i % 5 + 1) for i in range(60)]


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
    for name in ("manifest.json", "train.bin", "val.bin", "test.bin"):
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
    with pytest.raises(TinyLMError, match="three non-negative numbers"):
        parse_split("90,10")


def test_existing_dataset_kept_unless_overwrite(tmp_path):
    sources = write_corpus(tmp_path)
    run_prepare(sources, tmp_path / "out")
    before = (tmp_path / "out" / "train.bin").read_bytes()
    with pytest.raises(TinyLMError, match="--overwrite"):
        run_prepare(sources, tmp_path / "out")
    # A failing overwrite (bad source) leaves the earlier dataset whole.
    with pytest.raises(TinyLMError, match="no such file"):
        run_prepare([*sources, str(tmp_path / "missing.txt")], tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "train.bin").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    run_prepare(sources[:1], tmp_path / "out", overwrite=True)
    assert PreparedDataset.open(tmp_path / "out").manifest["sources"][0]["documents"] == 30


def test_tokens_file_size_checked(tmp_path):
    run_prepare(write_corpus(tmp_path), tmp_path / "out")
    with open(tmp_path / "out" / "val.bin", "ab") as f:
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
