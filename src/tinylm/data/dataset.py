"""A prepared dataset on disk: manifest.json, token shards per split, and its tokenizer.

    DIR/manifest.json                 what is in the files (see docs/data.md)
    DIR/train-00000.bin, ...          the split's documents' tokens, each followed by EOT
    DIR/val-00000.bin, test-00000.bin
    DIR/tokenizer/tokenizer.json      only for a BPE trained with `tinylm tokenizer train`

Shards are raw little-endian uint16 (uint32 for vocabularies over 65,536), read with
numpy.memmap, so a dataset of any size costs no RAM until it is used. A split's shards
read as one flat token array (`TokenArray`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.confine import confined
from tinylm.errors import TinyLMError

MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
FORMAT = "tinylm-tokens"
FORMAT_VERSION = 2


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


class TokenArray:
    """Several shards read as one 1-D token array: len, slices, and integer-array indexing."""

    def __init__(self, shards: list[np.ndarray], dtype: np.dtype) -> None:
        self.shards = [s for s in shards if len(s)]
        self.dtype = dtype
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])  # (n_shards + 1,)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        if len(self.shards) == 1:
            return self.shards[0][index]
        if isinstance(index, slice):
            return self[np.arange(len(self))[index]]
        index = np.asarray(index)
        shard = np.searchsorted(self.starts, index, side="right") - 1
        out = np.empty(index.shape, dtype=self.dtype)
        for s in np.unique(shard):
            mask = shard == s
            out[mask] = self.shards[s][index[mask] - self.starts[s]]
        return out

    def tolist(self) -> list[int]:
        return self[: len(self)].tolist() if len(self) else []


@dataclass
class PreparedDataset:
    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> PreparedDataset:
        path = Path(path)
        file = path / MANIFEST
        if not file.is_file():
            hint = "run `tinylm prepare SOURCE --out DIR` first"
            if path.exists():
                raise TinyLMError(f"{path}: not a prepared dataset (no {MANIFEST}); {hint}")
            raise TinyLMError(f"{path}: no such dataset directory; {hint}")
        try:
            manifest = json.loads(file.read_text(encoding="utf-8"))
        except ValueError:  # not JSON, not UTF-8
            raise TinyLMError(f"{file}: not valid JSON; prepare the dataset again") from None
        if (
            not isinstance(manifest, dict)
            or manifest.get("format") != FORMAT
            or manifest.get("version") != FORMAT_VERSION
        ):
            raise TinyLMError(
                f"{file}: not a {FORMAT} v{FORMAT_VERSION} manifest; prepare the dataset again"
            )
        problem = _manifest_problem(manifest)
        if problem:
            raise TinyLMError(f"{file}: damaged ({problem}); prepare the dataset again")
        return cls(path, manifest)

    @property
    def tokenizer_name(self) -> str:
        return self.manifest["tokenizer"]["name"]

    @property
    def tokenizer_fingerprint(self) -> str:
        return self.manifest["tokenizer"]["fingerprint"]

    @property
    def vocab_size(self) -> int:
        return self.manifest["tokenizer"]["vocab_size"]

    @property
    def splits(self) -> dict[str, dict[str, Any]]:
        return self.manifest["splits"]

    @functools.cached_property
    def tokenizer(self):  # -> Tokenizer (imported lazily: tiktoken is not needed to train)
        """The dataset's own tokenizer: by name (gpt2, bytes) or its saved tokenizer.json."""
        from tinylm.data.tokenizer import get_tokenizer

        file = self.manifest["tokenizer"].get("file")
        if file:
            file = confined(self.path, file, str(self.path / MANIFEST))
        tokenizer = get_tokenizer(str(file) if file else self.tokenizer_name)
        self.check_tokenizer(tokenizer.fingerprint, tokenizer.name, "the installed tokenizer")
        return tokenizer

    def tokens(self, split: str) -> TokenArray:
        """The split's tokens as one read-only array over its memmapped shards."""
        if split not in self.splits:
            raise TinyLMError(
                f"{self.path}: no split {split!r}; available: {', '.join(self.splits)}"
            )
        dtype = np.dtype(self.manifest["dtype"])
        shards = []
        for shard in self.splits[split]["shards"]:
            file = confined(self.path, shard["file"], str(self.path / MANIFEST))
            expected = shard["tokens"] * dtype.itemsize
            if not file.is_file() or file.stat().st_size != expected:
                raise TinyLMError(
                    f"{file}: missing or not {expected} bytes as the manifest says; "
                    "prepare the dataset again"
                )
            if shard["tokens"]:
                shards.append(np.memmap(file, dtype=dtype, mode="r"))
        return TokenArray(shards, dtype)

    def check_tokenizer(self, fingerprint: str, name: str, what: str) -> None:
        """Refuse to mix this dataset with a model (or tokenizer) of another vocabulary."""
        if fingerprint != self.tokenizer_fingerprint:
            raise TinyLMError(
                f"{self.path} was tokenized with {self.tokenizer_name} "
                f"({self.tokenizer_fingerprint[:12]}), "
                f"but {what} uses {name} ({fingerprint[:12]}); "
                "prepare the data with the model's tokenizer or train a new model on this data"
            )


def _manifest_problem(manifest: dict[str, Any]) -> str:
    """What is wrong with the fields the readers use ("" when nothing): their types, so a
    damaged or hand-edited manifest is one clear error, not a traceback later."""

    def counts(where: dict[str, Any], keys: tuple[str, ...], name: str) -> str:
        for key in keys:
            value = where.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return f"{name}.{key} is {value!r}, not a count"
        return ""

    tok = manifest.get("tokenizer")
    if not isinstance(tok, dict):
        return "no tokenizer object"
    for key in ("name", "fingerprint"):
        if not isinstance(tok.get(key), str):
            return f"tokenizer.{key} is {tok.get(key)!r}, not a string"
    if tok.get("file") is not None and not isinstance(tok.get("file"), str):
        return f"tokenizer.file is {tok.get('file')!r}"
    problem = counts(tok, ("vocab_size", "eot_id"), "tokenizer")
    if problem:
        return problem
    if manifest.get("dtype") not in (token_dtype(2).str, token_dtype(2**17).str):
        return f"dtype {manifest.get('dtype')!r} is not {token_dtype(2).str} or uint32"
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not splits:
        return "no splits object"
    for name, split in splits.items():
        if not isinstance(split, dict) or not isinstance(split.get("shards"), list):
            return f"split {name!r} has no list of shards"
        problem = counts(split, ("documents", "tokens"), f"splits.{name}")
        for i, shard in enumerate(split["shards"]):
            if problem:
                break
            if not isinstance(shard, dict) or not isinstance(shard.get("file"), str):
                return f"splits.{name}.shards[{i}] names no file"
            problem = counts(shard, ("tokens",), f"splits.{name}.shards[{i}]")
        if problem:
            return problem
    return ""


def model_tokenizer(tokenizer: dict[str, str], data_path: str | Path):  # -> Tokenizer
    """The tokenizer a checkpoint was trained with (its meta's name and fingerprint).

    gpt2, gpt2-N and bytes are found by name; a trained BPE is read from the training dataset.
    """
    from tinylm.data.tokenizer import get_tokenizer, is_named

    name, fingerprint = tokenizer["name"], tokenizer["fingerprint"]
    found = get_tokenizer(name) if is_named(name) else PreparedDataset.open(data_path).tokenizer
    if found.fingerprint != fingerprint:
        raise TinyLMError(
            f"the model was trained with {name} ({fingerprint[:12]}) but {found.name} "
            f"({found.fingerprint[:12]}) was found; use the dataset the model was trained on"
        )
    return found
