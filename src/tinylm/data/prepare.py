"""`tinylm prepare`: sources -> documents -> train/val/test split -> token files + manifest.

Documents are assigned to splits by a seeded hash of their text, so a document's split
never depends on the order or number of the other documents (val/test stay held out
when the corpus grows), and duplicates land in the same split. Each document's tokens
are followed by <|endoftext|>. Everything is written to a temporary directory beside the
output and renamed into place at the end: an interrupted run leaves no dataset that
looks complete, and a failed run leaves an earlier dataset untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinylm import __version__
from tinylm.atomic import replace_dir, temp_dir_beside
from tinylm.data.dataset import FORMAT, FORMAT_VERSION, MANIFEST, token_dtype
from tinylm.data.sources import BUILTINS, Document, SourceOptions, iter_documents
from tinylm.data.tokenizer import get_tokenizer
from tinylm.errors import TinyLMError
from tinylm.progress import progress

SPLITS = ("train", "val", "test")
ENCODE_BATCH = 256  # documents per tiktoken batch call


@dataclass
class PrepareOptions:
    sources: Sequence[str]
    out: Path
    tokenizer: str = "gpt2"
    split: tuple[float, float, float] = (0.98, 0.01, 0.01)
    seed: int = 1337
    source_options: SourceOptions = field(default_factory=SourceOptions)
    num_threads: int = 0
    """Tokenizer threads; 0 means one per core."""
    overwrite: bool = False


def parse_split(text: str) -> tuple[float, float, float]:
    """'98,1,1' or '0.98,0.01,0.01' -> fractions that sum to 1."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0 or parts[0] == 0:
        raise TinyLMError(
            f"--split {text!r}: expected three non-negative numbers train,val,test, e.g. 98,1,1"
        )
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def split_of(text: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """The split a document belongs to: a pure function of its text and the seed."""
    digest = hashlib.sha256(f"{seed}\0{text}".encode()).digest()
    u = int.from_bytes(digest[:8], "little") / 2**64  # uniform in [0, 1)
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def prepare(opts: PrepareOptions) -> dict[str, Any]:
    """Write the dataset to opts.out and return its manifest."""
    out = Path(opts.out)
    if (out / MANIFEST).exists() and not opts.overwrite:
        raise TinyLMError(
            f"{out}: a prepared dataset is already there; pass --overwrite to replace it"
        )
    if out.exists() and not out.is_dir():
        raise TinyLMError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise TinyLMError(
            f"{out}: directory is not empty and is not a dataset; choose another --out"
        )
    tokenizer = get_tokenizer(opts.tokenizer)

    documents: dict[str, list[Document]] = {name: [] for name in SPLITS}
    source_counts = []
    for spec in opts.sources:
        count = 0
        for doc in iter_documents(spec, opts.source_options):
            documents[split_of(doc.text, opts.seed, opts.split)].append(doc)
            count += 1
        if count == 0:
            raise TinyLMError(f"{spec}: no documents (all files empty or skipped)")
        source_counts.append({"spec": spec, "documents": count, **_builtin_facts(spec)})
    for name, fraction in zip(SPLITS, opts.split, strict=True):
        if fraction > 0 and not documents[name]:
            total = sum(len(d) for d in documents.values())
            raise TinyLMError(
                f"{total} documents leave the {name} split empty at {fraction:.1%}; "
                "use more documents or a larger share, e.g. --split 80,10,10"
            )

    threads = opts.num_threads or max(1, os.cpu_count() or 1)
    tmp = temp_dir_beside(out)
    try:
        dtype = token_dtype(tokenizer.vocab_size)
        total_docs = sum(len(d) for d in documents.values())
        splits = {}
        with progress(total_docs, desc="tokenize", unit="doc") as bar:
            for name in SPLITS:
                splits[name] = _write_split(
                    documents[name], tmp / f"{name}.bin", tokenizer, dtype, threads, bar
                )
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "tokenizer": {
                "name": tokenizer.name,
                "fingerprint": tokenizer.fingerprint,
                "vocab_size": tokenizer.vocab_size,
                "eot_id": tokenizer.eot_id,
            },
            "dtype": dtype.str,
            "seed": opts.seed,
            "split_fractions": dict(zip(SPLITS, opts.split, strict=True)),
            "sources": source_counts,
            "splits": splits,
            "created_by": f"tinylm {__version__}",
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _write_split(docs, path: Path, tokenizer, dtype, num_threads: int, bar) -> dict[str, Any]:
    sha = hashlib.sha256()
    tokens = text_bytes = 0
    with open(path, "wb") as f:
        for start in range(0, len(docs), ENCODE_BATCH):
            batch = [d.text for d in docs[start : start + ENCODE_BATCH]]
            for ids in tokenizer.encode_batch(batch, num_threads=num_threads):
                ids.append(tokenizer.eot_id)
                chunk = np.asarray(ids, dtype=dtype).tobytes()
                f.write(chunk)
                sha.update(chunk)
                tokens += len(ids)
            text_bytes += sum(len(t.encode("utf-8")) for t in batch)
            bar.update(len(batch))
            bar.set_postfix_str(f"{path.stem} {tokens:,} tokens", refresh=False)
    return {
        "file": path.name,
        "documents": len(docs),
        "tokens": tokens,
        "text_bytes": text_bytes,
        "sha256": sha.hexdigest(),
    }


def _builtin_facts(spec: str) -> dict[str, str]:
    if not spec.startswith("builtin:"):
        return {}
    builtin = BUILTINS[spec.removeprefix("builtin:")]
    return {
        "description": builtin.description,
        "license": builtin.license,
        "package": builtin.pip_name,
    }
