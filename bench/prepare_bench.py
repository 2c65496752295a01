"""Prepare throughput and peak memory on a ~100 MB corpus, next to raw tiktoken.

    flock /tmp/tinylm-heavy.lock .venv/bin/python bench/prepare_bench.py [--mb 100] [--rounds 3]

The corpus is builtin:mix (Wikipedia leads, State of the Union, Shakespeare, KJV) repeated
until it reaches --mb megabytes, each copy of a document given a distinct first line so
that dedup keeps it, written as one JSONL file. Per round, interleaved:

  raw tiktoken  encode_ordinary_batch over the same documents, 1 and 2 threads
                (texts already in memory: the tokenizer alone), and encode_to_numpy
                (the call prepare itself makes) on a pool of 1 and 2 threads
  tinylm        `tinylm prepare FILE --workers 1|2` as a subprocess: reading, cleaning,
                hashing, dedup, split, tokenization, shard writing, manifest

Reports medians of tokens/s, our overhead over raw tiktoken at the same parallelism, and
the peak resident memory of prepare's whole process tree (sampled every 50 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tinylm.data.sources import iter_documents
from tinylm.data.tokenizer import get_tokenizer


def build_corpus(path: Path, megabytes: float) -> int:
    docs = [d.text for d in iter_documents("builtin:mix")]
    written = copy = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < megabytes * 1e6:
            for i, text in enumerate(docs):
                line = json.dumps({"text": f"Copy {copy} of document {i}.\n{text}"})
                f.write(line + "\n")
                written += len(line) + 1
            copy += 1
    return written


def tree_rss(pid: int) -> int:
    """Resident bytes of pid and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def run_prepare(corpus: Path, out: Path, workers: int) -> tuple[float, int, int]:
    """(seconds, tokens, peak tree RSS bytes) of one `tinylm prepare`."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "tinylm", "prepare", str(corpus), "--out", str(out),
           "--workers", str(workers)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    code = proc.wait()
    seconds = time.perf_counter() - start
    sampler.join()
    if code != 0:
        raise SystemExit(f"prepare failed with exit code {code}")
    manifest = json.loads((out / "manifest.json").read_text())
    return seconds, sum(s["tokens"] for s in manifest["splits"].values()), peak


def run_raw(texts: list[str], threads: int) -> tuple[float, int]:
    enc = get_tokenizer("gpt2").encoding
    start = time.perf_counter()
    tokens = sum(len(ids) for ids in enc.encode_ordinary_batch(texts, num_threads=threads))
    return time.perf_counter() - start, tokens + len(texts)  # + one EOT per document, as ours


def run_raw_numpy(texts: list[str], threads: int) -> tuple[float, int]:
    """The exact call prepare's workers make (encode_to_numpy), on `threads` threads."""
    enc = get_tokenizer("gpt2").encoding

    def encode(text: str) -> int:
        return len(enc.encode_to_numpy(text, disallowed_special=()))

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        tokens = sum(pool.map(encode, texts, chunksize=256))
    return time.perf_counter() - start, tokens + len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tinylm-bench-"))
    try:
        corpus = work / "corpus.jsonl"
        size = build_corpus(corpus, args.mb)
        texts = [d.text for d in iter_documents(str(corpus))]
        print(f"corpus: {size / 1e6:.0f} MB JSONL, {len(texts):,} documents, "
              f"{os.cpu_count()} CPUs", flush=True)  # fmt: skip
        results: dict[str, list] = {}
        for r in range(args.rounds):
            for workers in (1, 2):
                sec, tok = run_raw(texts, workers)
                results.setdefault(f"raw{workers}", []).append(tok / sec)
                sec, tok = run_raw_numpy(texts, workers)
                results.setdefault(f"np{workers}", []).append(tok / sec)
                sec, tok, rss = run_prepare(corpus, work / "out", workers)
                results.setdefault(f"ours{workers}", []).append(tok / sec)
                results.setdefault(f"rss{workers}", []).append(rss)
                raw, npy = results[f"raw{workers}"][-1], results[f"np{workers}"][-1]
                print(f"round {r + 1} workers {workers}: raw {raw:,.0f} tok/s, raw numpy "
                      f"{npy:,.0f} tok/s, prepare {tok / sec:,.0f} tok/s ({sec:.1f} s, "
                      f"{tok:,} tokens), peak RSS {rss / 2**20:.0f} MiB", flush=True)  # fmt: skip
        print("\n| processes | raw encode_ordinary_batch tokens/s | raw encode_to_numpy "
              "tokens/s | tinylm prepare tokens/s | overhead vs each | "
              "peak RSS (prepare, all processes) |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for w in (1, 2):
            raw = statistics.median(results[f"raw{w}"])
            npy = statistics.median(results[f"np{w}"])
            ours = statistics.median(results[f"ours{w}"])
            rss = statistics.median(results[f"rss{w}"])
            over = f"{raw / ours - 1:+.0%} / {npy / ours - 1:+.0%}"
            print(f"| {w} | {raw:,.0f} | {npy:,.0f} | {ours:,.0f} | {over} | "
                  f"{rss / 2**20:.0f} MiB |")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
