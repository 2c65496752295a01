"""A prepared dataset on disk: manifest.json plus one flat token file per split.

    DIR/manifest.json   what is in the files (see docs/data.md)
    DIR/train.bin       all training documents' tokens, each followed by <|endoftext|>
    DIR/val.bin         same for validation
    DIR/test.bin        same for test

Token files are raw little-endian uint16 (uint32 for vocabularies over 65,536), read
with numpy.memmap so a dataset of any size costs no RAM until it is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.errors import TinyLMError

MANIFEST = "manifest.json"
FORMAT = "tinylm-tokens"
FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


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
            manifest = json.loads(file.read_text())
        except json.JSONDecodeError:
            raise TinyLMError(f"{file}: not valid JSON; prepare the dataset again") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
            raise TinyLMError(
                f"{file}: not a {FORMAT} v{FORMAT_VERSION} manifest; prepare the dataset again"
            )
        return cls(path, manifest)

    @property
    def tokenizer_name(self) -> str:
        return self.manifest["tokenizer"]["name"]

    @property
    def tokenizer_fingerprint(self) -> str:
        return self.manifest["tokenizer"]["fingerprint"]

    @property
    def splits(self) -> dict[str, dict[str, Any]]:
        return self.manifest["splits"]

    def tokens(self, split: str) -> np.ndarray:
        """The split's tokens as a read-only memmap (1-D)."""
        if split not in self.splits:
            raise TinyLMError(
                f"{self.path}: no split {split!r}; available: {', '.join(self.splits)}"
            )
        info = self.splits[split]
        file = self.path / info["file"]
        dtype = np.dtype(self.manifest["dtype"])
        expected = info["tokens"] * dtype.itemsize
        if not file.is_file() or file.stat().st_size != expected:
            raise TinyLMError(
                f"{file}: missing or not {expected} bytes as the manifest says; "
                "prepare the dataset again"
            )
        if info["tokens"] == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(file, dtype=dtype, mode="r")

    def check_tokenizer(self, fingerprint: str, name: str, what: str) -> None:
        """Refuse to mix this dataset with a model (or tokenizer) of another vocabulary."""
        if fingerprint != self.tokenizer_fingerprint:
            raise TinyLMError(
                f"{self.path} was tokenized with {self.tokenizer_name} "
                f"({self.tokenizer_fingerprint[:12]}), "
                f"but {what} uses {name} ({fingerprint[:12]}); "
                "prepare the data with the model's tokenizer or train a new model on this data"
            )
