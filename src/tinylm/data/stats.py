"""What is in a prepared dataset (`tinylm data stats`), and the texts a tokenizer trains on.

Statistics stream over the shards in chunks, so they work on datasets of any size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tinylm.data.clean import CleanOptions, clean_text
from tinylm.data.dataset import PreparedDataset
from tinylm.data.prepare import content_hash, split_draws, split_index
from tinylm.data.sources import SourceOptions, iter_documents

CHUNK = 1 << 24  # tokens read at a time


def training_texts(
    sources: Sequence[str],
    source: SourceOptions,
    clean: CleanOptions,
    split: tuple[float, float, float],
    seed: int,
) -> Iterator[str]:
    """Cleaned, deduplicated documents that `prepare` would put in the train split.

    A tokenizer trained on these never saw the val/test documents.
    """
    seen: set[bytes] = set()
    for spec in sources:
        for doc in iter_documents(spec, source):
            text = clean_text(doc.text, clean)
            if len(text) < max(clean.min_chars, 1):
                continue
            digest = content_hash(text)
            if clean.dedup:
                if digest in seen:
                    continue
                seen.add(digest)
            if split_index(split_draws(digest, seed)[0], split) == 0:
                yield text


def dataset_stats(dataset: PreparedDataset, top: int = 10) -> dict[str, Any]:
    """Per split: documents, tokens, bytes per token, top tokens, document-length histogram."""
    eot = dataset.manifest["tokenizer"]["eot_id"]
    vocab = dataset.vocab_size
    out = {}
    for name, info in dataset.splits.items():
        tokens = dataset.tokens(name)
        counts = np.zeros(vocab, dtype=np.int64)
        lengths = []  # tokens per document, EOT included
        since_eot = 0
        for start in range(0, len(tokens), CHUNK):
            chunk = np.asarray(tokens[start : start + CHUNK])
            counts += np.bincount(chunk, minlength=vocab)[:vocab]
            ends = np.flatnonzero(chunk == eot)
            if len(ends):
                lengths.append(np.diff(np.concatenate([[-1 - since_eot], ends])))
                since_eot = len(chunk) - 1 - ends[-1]
            else:
                since_eot += len(chunk)
        lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
        text_tokens = info["tokens"] - info["documents"]  # without the EOT markers
        edges = 2 ** np.arange(0, max(1, int(np.ceil(np.log2(lengths.max() + 1)))) + 1)
        hist, _ = np.histogram(lengths, bins=edges) if len(lengths) else ([], None)
        order = np.argsort(-counts, kind="stable")[:top]
        out[name] = {
            "documents": info["documents"],
            "tokens": info["tokens"],
            "text_bytes": info["text_bytes"],
            "bytes_per_token": info["text_bytes"] / text_tokens if text_tokens else None,
            "top_tokens": [(int(i), int(counts[i])) for i in order if counts[i]],
            "length_histogram": [
                (int(edges[i]), int(edges[i + 1]) - 1, int(n)) for i, n in enumerate(hist) if n
            ],
        }
    return out


def format_stats(dataset: PreparedDataset, stats: dict[str, Any]) -> str:
    tokenizer = dataset.tokenizer
    lines = [dataset.manifest.get("description", str(dataset.path)), ""]
    for name, s in stats.items():
        bpt = f"{s['bytes_per_token']:.2f}" if s["bytes_per_token"] else "-"
        lines.append(
            f"{name}: {s['documents']:,} documents, {s['tokens']:,} tokens, "
            f"{s['text_bytes']:,} bytes, {bpt} bytes/token"
        )
        if s["top_tokens"]:
            total = s["tokens"]
            tops = ", ".join(f"{_show(tokenizer, i)} {n / total:.1%}" for i, n in s["top_tokens"])
            lines.append(f"  top tokens: {tops}")
        if s["length_histogram"]:
            lines.append("  document length (tokens): count")
            width = max(n for *_, n in s["length_histogram"])
            for lo, hi, n in s["length_histogram"]:
                bar = "#" * max(1, round(30 * n / width))
                lines.append(f"  {lo:>8,}-{hi:<8,} {n:>9,} {bar}")
    return "\n".join(lines)


def _show(tokenizer, token: int) -> str:
    if token == tokenizer.eot_id:
        return "<EOT>"
    return repr(tokenizer.decode([token]))
