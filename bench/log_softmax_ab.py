"""fp32 log-softmax of bf16 logits on a CPU: torch's mixed-dtype kernel vs convert + fp32.

    PYTHONPATH=src flock /tmp/tinylm-heavy.lock python bench/log_softmax_ab.py

One output-layer chunk of the chunked loss (256 positions x GPT-2's 50,257 logits), the two
ways interleaved, median of --reps; checks that both give the same numbers bit for bit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as tinylm sets it
import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--positions", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=50257)
    args = parser.parse_args()
    torch.manual_seed(0)
    logits = (torch.randn(args.positions, args.vocab) * 3).bfloat16()
    a, b = torch.empty(logits.shape), torch.empty(logits.shape)

    def mixed() -> None:
        torch.log_softmax(logits, dim=-1, dtype=torch.float32, out=a)

    def convert() -> None:  # what tinylm.loss does on a CPU
        torch.log_softmax(b.copy_(logits), dim=-1, out=b)

    times: dict[str, list[float]] = {"mixed": [], "convert": []}
    for i in range(args.reps + 2):
        for name, f in (("mixed", mixed), ("convert", convert)):
            start = time.perf_counter()
            f()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    m, c = (statistics.median(times[k]) * 1e3 for k in ("mixed", "convert"))
    print(f"{args.positions}x{args.vocab} bf16 -> fp32 log-softmax, {torch.get_num_threads()} "
          f"threads: log_softmax(dtype=float32) {m:.1f} ms, convert + fp32 {c:.1f} ms "
          f"({m / c:.1f}x); identical: {torch.equal(a, b)}")  # fmt: skip


if __name__ == "__main__":
    main()
