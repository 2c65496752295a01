"""tinylm: train small GPT-style language models from scratch, end to end."""

import os as _os

# OpenMP worker threads that spin while they wait for work cost little on an idle machine
# and a great deal on a busy one: with other jobs on a 2-core box, greedy generation ran
# at 8 tokens/s spinning and 366 tokens/s sleeping (bench/omp_wait_policy.py). It must be
# set before torch loads its OpenMP runtime; a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
