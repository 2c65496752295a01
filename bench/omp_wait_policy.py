"""Greedy generation speed (seed-d128, batch 1, 30 tokens, KV cache) under OpenMP settings.

    for e in "" OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1; do
        env $e PYTHONPATH=src python bench/omp_wait_policy.py; done

Run from a plain `import torch` (before tinylm), so the environment decides the policy.
On the shared 2-core machine (other jobs running) this printed 8 tokens/s with OpenMP's
default spin-waiting, 366 with OMP_WAIT_POLICY=PASSIVE and 121 with one thread.
"""

import os
import time

import torch

from tinylm.config import MODEL_PRESETS
from tinylm.generate import generate
from tinylm.model import GPT

model = GPT(MODEL_PRESETS["seed-d128"]).eval()
prompt = torch.randint(0, 50257, (1, 16))
generate(model, prompt, 5, temperature=0)  # warm-up
start = time.time()
generate(model, prompt, 30, temperature=0)
print(
    f"{30 / (time.time() - start):.0f} tokens/s, {torch.get_num_threads()} threads, "
    f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}"
)
