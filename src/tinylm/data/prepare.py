"""`tinylm prepare`: sources -> clean -> dedup -> split -> tokenize -> shards + manifest.

    main process                     worker processes (--workers)        main process
    read sources, chunk ──────────►  clean, hash, encode a chunk  ──────► dedup, weight,
    (~1M characters per chunk)       (tokens + per-document facts)       write shards in order

Streaming all the way: at most 2 chunks per worker are in flight, shards are written
as results arrive, and dedup keeps a 16-byte hash per unique document, so memory does
not grow with the corpus (see docs/data.md for the bound). Results are written in input
order whatever the number of workers, so the output is byte-identical for 1 or N.

A document's split is a pure function of its cleaned text and the seed, so the same
document lands in the same split when the corpus grows, and duplicates never straddle
splits. Everything is written to DIR's hidden `.partial` sibling and renamed into place
last: an interrupted run leaves nothing that looks like a dataset. Every few chunks the
position is saved there (progress.json), so rerunning the same command resumes; the
result is byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinylm import __version__
from tinylm.atomic import OLD_MARK, fsync_dir, remove_temporaries, replace_dir, write_atomic
from tinylm.data.clean import CleanOptions, clean_text
from tinylm.data.dataset import FORMAT, FORMAT_VERSION, MANIFEST, TOKENIZER_DIR, token_dtype
from tinylm.data.sources import (
    BUILTINS,
    SourceCounts,
    SourceOptions,
    check_source,
    iter_documents,
    source_files,
)
from tinylm.data.tokenizer import TOKENIZER_FILE, HFTokenizer, Tokenizer, get_tokenizer
from tinylm.errors import TinyLMError, disk_full
from tinylm.lock import hold_lock
from tinylm.progress import progress

SPLITS = ("train", "val", "test")
MAX_WEIGHT = 1000.0  # copies of each document a mixture weight may ask for
CHUNK_CHARS = 1_000_000  # characters of text per unit of work sent to a worker
SHARD_TOKENS = 100_000_000  # a shard is closed at the first document end past this many tokens
CHECKPOINT_CHUNKS = 32  # chunks between saved positions (~32M characters)
PROGRESS = "progress.json"  # inside DIR.partial: how far an interrupted run got
SEEN = "seen.bin"  # inside DIR.partial: the dedup hashes so far, 16 bytes each


@dataclass
class PrepareOptions:
    sources: Sequence[str]
    out: Path
    tokenizer: str = "gpt2"
    """gpt2, bytes, or a tokenizer.json from `tinylm tokenizer train`."""
    split: tuple[float, float, float] = (0.98, 0.01, 0.01)
    seed: int = 1337
    source_options: SourceOptions = field(default_factory=SourceOptions)
    clean: CleanOptions = field(default_factory=CleanOptions)
    weights: Sequence[float] | None = None
    """Mixture weight per source: each kept document is written floor(w) times, plus once
    more with probability frac(w) (decided by its hash), e.g. 0.5 keeps half, 2 doubles."""
    workers: int = 1
    """Tokenizer processes; 0 means one per core. 1 tokenizes in this process."""
    shard_tokens: int = SHARD_TOKENS
    chunk_chars: int = CHUNK_CHARS
    checkpoint_chunks: int = CHECKPOINT_CHUNKS
    """Save the position every this many chunks, so an interrupted run can resume."""
    overwrite: bool = False


def parse_split(text: str) -> tuple[float, float, float]:
    """'98,1,1' or '0.98,0.01,0.01' -> fractions that sum to 1."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    finite = all(math.isfinite(p) for p in parts) and math.isfinite(sum(parts))
    # A zero train share is allowed: 0,0,1 makes a test-only (out-of-domain) evaluation set.
    if len(parts) != 3 or not finite or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise TinyLMError(
            f"--split {text!r}: expected three non-negative numbers train,val,test, not all 0, "
            "e.g. 98,1,1 (0,0,1: all of it for evaluation)"
        )
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def content_hash(text: str) -> bytes:
    """16-byte identity of a (cleaned) document: the dedup key and the input of its split."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def split_draws(digest: bytes, seed: int) -> tuple[float, float]:
    """Two uniform [0, 1) numbers fixed by (seed, document): one for the split, one for weights."""
    h = hashlib.sha256(seed.to_bytes(8, "little", signed=True) + digest).digest()
    return int.from_bytes(h[:8], "little") / 2**64, int.from_bytes(h[8:16], "little") / 2**64


def split_index(u: float, fractions: tuple[float, float, float]) -> int:
    if u < fractions[0]:
        return 0
    return 1 if u < fractions[0] + fractions[1] else 2


def split_of(text: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """The split a cleaned document belongs to: a pure function of its text and the seed."""
    return SPLITS[split_index(split_draws(content_hash(text), seed)[0], fractions)]


def prepare(opts: PrepareOptions) -> dict[str, Any]:
    """Write the dataset to opts.out and return its manifest.

    One prepare writes a dataset at a time: it holds the output's lock (tinylm.lock) for
    the whole command, and a second `tinylm prepare` on the same --out is refused.
    """
    out = Path(opts.out)
    with hold_lock(out, "dataset"):
        _recover_interrupted(out)
        return _prepare(opts, out)


def _recover_interrupted(out: Path) -> None:
    """Under the lock: a dataset an interrupted --overwrite had renamed aside (killed
    between the two renames of replace_dir) comes back; one already replaced goes; a
    work directory with no saved position to resume from goes too."""
    aside = re.compile(re.escape(f".{out.name}{OLD_MARK}") + "[0-9]+")
    for old in sorted(out.parent.glob(f".{out.name}{OLD_MARK}*")):
        if not aside.fullmatch(old.name):
            continue
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(out)
            print(f"note: {out}: restored the dataset an interrupted --overwrite had set "
                  "aside", file=sys.stderr)  # fmt: skip
    partial = _partial_dir(out)
    if partial.is_dir() and not (partial / PROGRESS).is_file():
        print(f"note: removing {partial} left by an interrupted prepare", file=sys.stderr)
        shutil.rmtree(partial)


def _partial_dir(out: Path) -> Path:
    """Where a prepare builds DIR: `.DIR.partial` beside it."""
    return out.parent / f".{out.name}.partial"


def _prepare(opts: PrepareOptions, out: Path) -> dict[str, Any]:
    _check_out(out, opts.overwrite)
    tokenizer = get_tokenizer(opts.tokenizer)
    weights = list(opts.weights) if opts.weights else [1.0] * len(opts.sources)
    if len(weights) != len(opts.sources) or any(not 0 < w <= MAX_WEIGHT for w in weights):
        raise TinyLMError(
            f"--weights: expected {len(opts.sources)} numbers in (0, {MAX_WEIGHT:g}], one per "
            "source (a weight is how many times each document is written)"
        )
    for spec in opts.sources:
        check_source(spec)
    workers = opts.workers or os.cpu_count() or 1
    partial = _partial_dir(out)
    key = _resume_key(opts, tokenizer)
    resume = _saved_progress(partial, key)
    if resume is None and partial.exists():
        print(f"note: removing {partial} left by an interrupted prepare", file=sys.stderr)
        shutil.rmtree(partial)
    if resume is not None:
        print(
            f"note: resuming the interrupted prepare in {partial} after "
            f"{resume['chunks_done']} chunks ({resume['tokens']:,} tokens)",
            file=sys.stderr,
        )
    partial.mkdir(parents=True, exist_ok=True)
    remove_temporaries(partial)  # a killed run's half-written progress.json, say
    try:
        manifest = _prepare_into(partial, opts, tokenizer, weights, workers, key, resume)
        (partial / PROGRESS).unlink(missing_ok=True)
        (partial / SEEN).unlink(missing_ok=True)
        remove_temporaries(partial)
        replace_dir(partial, out)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        if disk_full(err):
            raise TinyLMError(
                f"{out}: disk full while writing ({err.strerror}); "
                "free some space or choose another --out, then run prepare again"
            ) from None
        raise
    except KeyboardInterrupt:
        # Kept (it has no manifest, so it is no dataset): the same command resumes it.
        print(f"note: rerun the same command to resume from {partial}", file=sys.stderr)
        raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _check_out(out: Path, overwrite: bool) -> None:
    if (out / MANIFEST).exists() and not overwrite:
        raise TinyLMError(
            f"{out}: a prepared dataset is already there; pass --overwrite to replace it"
        )
    if out.exists() and not out.is_dir():
        raise TinyLMError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise TinyLMError(
            f"{out}: directory is not empty and is not a dataset; choose another --out"
        )


def _prepare_into(
    tmp: Path,
    opts: PrepareOptions,
    tokenizer: Tokenizer,
    weights: list[float],
    workers: int,
    key: str,
    resume: dict[str, Any] | None,
) -> dict[str, Any]:
    dtype = token_dtype(tokenizer.vocab_size)
    tokenizer_file = None
    if isinstance(tokenizer, HFTokenizer):  # the dataset carries its own tokenizer
        (tmp / TOKENIZER_DIR).mkdir(exist_ok=True)
        tokenizer_file = f"{TOKENIZER_DIR}/{TOKENIZER_FILE}"
        write_atomic(tmp / tokenizer_file, tokenizer.path.read_bytes())
    writers = [ShardWriter(tmp, name, dtype, opts.shard_tokens) for name in SPLITS]
    counts = [SourceCounts() for _ in opts.sources]
    stats = [
        Counter(documents=0, too_short=0, duplicates=0, kept=0, written=0) for _ in opts.sources
    ]
    seen: set[bytes] = set()
    chunks_done = docs = tokens = 0
    if resume is not None:
        chunks_done, docs, tokens = resume["chunks_done"], resume["docs"], resume["tokens"]
        for writer, state in zip(writers, resume["writers"], strict=True):
            writer.restore(state)
        for counter, saved in zip(stats, resume["stats"], strict=True):
            counter.update(saved)
        with open(tmp / SEEN, "r+b") as f:
            f.truncate(resume["seen_bytes"])
            data = f.read()
        seen = {data[i : i + 16] for i in range(0, len(data), 16)}
    seen_log = open(tmp / SEEN, "ab")  # noqa: SIM115 (closed below)
    total_bytes = _known_size(opts.sources)
    bar = progress(total_bytes / 1e6 if total_bytes else None, desc="prepare", unit="MB", delay=1.0)
    bar.bar_format = None if total_bytes else "{desc}: {n:.1f} MB [{elapsed}, {rate_fmt}{postfix}]"
    with bar, seen_log, _Encoder(opts.tokenizer, opts.clean, opts.seed, workers) as encoder:
        chunks = _chunks(opts.sources, opts.source_options, counts, opts.chunk_chars, bar)
        # Chunks are cut the same way every run; the ones already written are read, not encoded.
        chunks = itertools.islice(chunks, chunks_done, None)
        for source, result in encoder.map(chunks):
            s = stats[source]
            offsets = np.concatenate([[0], np.cumsum(result.lengths)])
            for i in range(len(result.lengths)):
                s["documents"] += 1
                if result.lengths[i] == 0:
                    s["too_short"] += 1
                    continue
                digest = result.digests[16 * i : 16 * i + 16]
                if opts.clean.dedup:
                    if digest in seen:
                        s["duplicates"] += 1
                        continue
                    seen.add(digest)
                    seen_log.write(digest)
                w = weights[source]
                copies = int(w) + int(result.weight_u[i] < w - int(w))
                split = split_index(result.split_u[i], opts.split)
                doc_tokens = result.tokens[offsets[i] : offsets[i + 1]]
                for _ in range(copies):
                    writers[split].write(doc_tokens, int(result.text_bytes[i]))
                s["kept"] += 1
                s["written"] += copies
                docs += copies
                tokens += copies * len(doc_tokens)
            bar.set_postfix_str(f"{docs:,} docs, {tokens:,} tokens", refresh=False)
            chunks_done += 1
            if chunks_done % opts.checkpoint_chunks == 0:
                seen_log.flush()
                os.fsync(seen_log.fileno())
                state = {
                    "key": key,
                    "chunks_done": chunks_done,
                    "docs": docs,
                    "tokens": tokens,
                    "writers": [w.checkpoint() for w in writers],
                    "stats": [dict(c) for c in stats],
                    "seen_bytes": seen_log.tell(),
                }
                write_atomic(tmp / PROGRESS, json.dumps(state))
    for spec, s, c in zip(opts.sources, stats, counts, strict=True):
        if s["documents"] == 0:
            raise TinyLMError(f"{spec}: no documents (all empty or skipped)")
        s.update(c.skipped)
    splits = {}
    for name, fraction, writer in zip(SPLITS, opts.split, writers, strict=True):
        splits[name] = writer.close()
        if fraction > 0 and splits[name]["documents"] == 0:
            raise TinyLMError(
                f"{docs} documents leave the {name} split empty at {fraction:.1%}; "
                "use more documents or a larger share, e.g. --split 80,10,10"
            )
    sources = [
        {"spec": spec, "weight": w, **dict(sorted(s.items())), **_builtin_facts(spec)}
        for spec, w, s in zip(opts.sources, weights, stats, strict=True)
    ]
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "description": _describe(opts, tokenizer, sources, splits),
        "tokenizer": {
            "name": tokenizer.name,
            "fingerprint": tokenizer.fingerprint,
            "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id,
            "file": tokenizer_file,
        },
        "dtype": dtype.str,
        "seed": opts.seed,
        "split_fractions": dict(zip(SPLITS, opts.split, strict=True)),
        "cleaning": asdict(opts.clean),
        "sources": sources,
        "splits": splits,
        "created_by": f"tinylm {__version__}",
    }
    write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    fsync_dir(tmp)
    return manifest


class ShardWriter:
    """One split's token shards: NAME-00000.bin, ... each closed at a document boundary."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.folder, self.split, self.dtype, self.shard_tokens = folder, split, dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.documents = self.text_bytes = 0
        self._file = None

    def write(self, tokens: np.ndarray, text_bytes: int) -> None:
        if self._file is None:
            name = f"{self.split}-{len(self.shards):05d}.bin"
            self._file = open(self.folder / name, "wb")  # noqa: SIM115 (closed in _close_shard)
            self._sha = hashlib.sha256()
            self.shards.append({"file": name, "documents": 0, "tokens": 0})
        data = tokens.astype(self.dtype, copy=False).tobytes()
        self._file.write(data)
        self._sha.update(data)
        shard = self.shards[-1]
        shard["documents"] += 1
        shard["tokens"] += len(tokens)
        self.documents += 1
        self.text_bytes += text_bytes
        if shard["tokens"] >= self.shard_tokens:
            self._close_shard()

    def checkpoint(self) -> dict[str, Any]:
        """The writer's state with everything so far on disk (for resuming)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        return {
            "shards": [dict(s) for s in self.shards],
            "open": self._file is not None,
            "documents": self.documents,
            "text_bytes": self.text_bytes,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from checkpoint(): cut the open shard back, drop shards begun later."""
        self.shards = [dict(s) for s in state["shards"]]
        self.documents, self.text_bytes = state["documents"], state["text_bytes"]
        known = {s["file"] for s in self.shards}
        for file in self.folder.glob(f"{self.split}-*.bin"):
            if file.name not in known:
                file.unlink()
        if state["open"]:
            path = self.folder / self.shards[-1]["file"]
            self._file = open(path, "r+b")  # noqa: SIM115 (closed in _close_shard)
            self._file.truncate(self.shards[-1]["tokens"] * self.dtype.itemsize)
            self._sha = hashlib.sha256(self._file.read())
            self._file.seek(0, os.SEEK_END)

    def _close_shard(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self.shards[-1]["sha256"] = self._sha.hexdigest()

    def close(self) -> dict[str, Any]:
        if self._file is not None:
            self._close_shard()
        return {
            "documents": self.documents,
            "tokens": sum(s["tokens"] for s in self.shards),
            "text_bytes": self.text_bytes,
            "shards": self.shards,
        }


@dataclass
class ChunkResult:
    """One chunk's documents after cleaning and tokenization (arrays, cheap to pickle)."""

    tokens: np.ndarray  # all kept documents' tokens, each followed by EOT, int64
    lengths: np.ndarray  # (docs,) tokens per document incl. EOT; 0 = dropped as too short
    digests: bytes  # 16 bytes per document
    split_u: np.ndarray  # (docs,) uniform draw deciding the split
    weight_u: np.ndarray  # (docs,) uniform draw deciding a fractional mixture weight
    text_bytes: np.ndarray  # (docs,) UTF-8 bytes of the cleaned text
    chars: int  # characters read (before cleaning), for progress


def _chunks(
    sources: Sequence[str],
    options: SourceOptions,
    counts: list[SourceCounts],
    chunk_chars: int,
    bar: Any,
) -> Iterator[tuple[int, list[str]]]:
    """(source index, texts) of about chunk_chars characters each, in input order."""
    for index, spec in enumerate(sources):
        texts: list[str] = []
        size = 0
        for doc in iter_documents(spec, options, counts[index]):
            texts.append(doc.text)
            size += len(doc.text)
            if size >= chunk_chars:
                bar.update(size / 1e6)
                yield index, texts
                texts, size = [], 0
        if texts:
            bar.update(size / 1e6)
            yield index, texts


def _resume_key(opts: PrepareOptions, tokenizer: Tokenizer) -> str:
    """What must be equal for a rerun to continue an interrupted one: inputs and options."""
    files = []
    for spec in opts.sources:
        if not spec.startswith(("builtin:", "hf:")):
            files += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in source_files(spec)]
    facts = {
        "version": FORMAT_VERSION,
        "options": repr(
            (
                opts.sources,
                opts.split,
                opts.seed,
                opts.source_options,
                opts.clean,
                opts.weights,
                opts.shard_tokens,
                opts.chunk_chars,
            )
        ),  # fmt: skip
        "tokenizer": tokenizer.fingerprint,
        "files": files,
    }
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()


def _saved_progress(partial: Path, key: str) -> dict[str, Any] | None:
    """The saved position of an interrupted run with the same inputs, if there is one."""
    try:
        state = json.loads((partial / PROGRESS).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("key") == key else None


_worker: dict[str, Any] = {}


def _init_worker(tokenizer: str, clean: CleanOptions, seed: int) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core per worker
    _worker.update(tokenizer=get_tokenizer(tokenizer), clean=clean, seed=seed)


def _encode_chunk(texts: list[str]) -> ChunkResult:
    tok: Tokenizer = _worker["tokenizer"]
    clean: CleanOptions = _worker["clean"]
    n = len(texts)
    lengths = np.zeros(n, dtype=np.int64)
    split_u, weight_u = np.zeros(n), np.zeros(n)
    text_bytes = np.zeros(n, dtype=np.int64)
    digests = bytearray(16 * n)
    kept, kept_index = [], []
    for i, raw in enumerate(texts):
        text = clean_text(raw, clean)
        if len(text) < max(clean.min_chars, 1):
            continue
        data = text.encode("utf-8")
        digest = hashlib.blake2b(data, digest_size=16).digest()
        digests[16 * i : 16 * i + 16] = digest
        split_u[i], weight_u[i] = split_draws(digest, _worker["seed"])
        text_bytes[i] = len(data)
        kept.append(text)
        kept_index.append(i)
    parts = []
    eot = np.array([tok.eot_id], dtype=np.int64)
    for i, ids in zip(kept_index, tok.encode_arrays(kept), strict=True):
        lengths[i] = len(ids) + 1
        parts += [ids, eot]
    tokens = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    chars = sum(len(t) for t in texts)
    return ChunkResult(tokens, lengths, bytes(digests), split_u, weight_u, text_bytes, chars)


class _Encoder:
    """Runs _encode_chunk in this process (workers=1) or a pool, results in input order."""

    def __init__(self, tokenizer: str, clean: CleanOptions, seed: int, workers: int) -> None:
        self.args = (tokenizer, clean, seed)
        self.workers = workers
        self.pool = None

    def __enter__(self) -> _Encoder:
        if self.workers > 1:
            # spawn: a clean interpreter per worker (fork would copy torch's threads).
            ctx = multiprocessing.get_context("spawn")
            self.pool = ctx.Pool(self.workers, initializer=_init_worker, initargs=self.args)
        else:
            _init_worker(*self.args)
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def map(self, chunks: Iterator[tuple[int, list[str]]]) -> Iterator[tuple[int, ChunkResult]]:
        if self.pool is None:
            for source, texts in chunks:
                yield source, _encode_chunk(texts)
            return
        # Pool.imap would read the whole input ahead; keep at most 2 chunks per worker.
        pending: deque = deque()
        for source, texts in chunks:
            pending.append((source, self.pool.apply_async(_encode_chunk, (texts,))))
            del texts
            if len(pending) >= 2 * self.workers:
                source0, result = pending.popleft()
                yield source0, result.get()
        while pending:
            source0, result = pending.popleft()
            yield source0, result.get()


def _known_size(sources: Sequence[str]) -> int:
    """Total bytes of the inputs when all are plain local files (for an ETA), else 0.

    Progress counts characters of text, so for JSON the bar ends a little short of 100%.
    """
    total = 0
    for spec in sources:
        if spec.startswith(("builtin:", "hf:")):
            return 0
        for file in source_files(spec):
            if file.suffix.lower() in {".gz", ".zst", ".parquet"}:
                return 0
            total += file.stat().st_size
    return total


def _describe(opts, tokenizer, sources, splits) -> str:
    docs = sum(s["documents"] for s in splits.values())
    tokens = sum(s["tokens"] for s in splits.values())
    shares = " / ".join(
        f"{name} {fraction:.0%}" for name, fraction in zip(SPLITS, opts.split, strict=True)
    )
    dups = sum(s.get("duplicates", 0) for s in sources)
    return (
        f"{' + '.join(s['spec'] for s in sources)} tokenized with {tokenizer.name}: "
        f"{docs:,} documents, {tokens:,} tokens (each document ends with token "
        f"{tokenizer.eot_id}); split by document hash ({shares}, seed {opts.seed}); "
        f"{dups:,} exact duplicates removed"
    )


def _builtin_facts(spec: str) -> dict[str, str]:
    if not spec.startswith("builtin:"):
        return {}
    builtin = BUILTINS[spec.removeprefix("builtin:")]
    return {
        "description": builtin.description,
        "license": builtin.license,
        "package": builtin.pip_name,
    }
