"""Named points where a test can kill tinylm, to show a kill anywhere leaves nothing
half-done: `TINYLM_KILL_AT=checkpoint:committed@2 tinylm train ...` SIGKILLs the process
the second time it reaches that point (`@1`, the first, is the default).

The points mark the steps of sequences whose every prefix must be recoverable: the
end of a training run (end:*), a checkpoint write (checkpoint:*), an --overwrite
(overwrite:*). `TINYLM_KILL_AT=trace` kills nowhere and prints each point reached
(`kill point: NAME@N` on stderr), which is how tests list them. Off unless the variable
is set; the cost is one environment lookup.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

KILL_ENV = "TINYLM_KILL_AT"
_reached: Counter[str] = Counter()


def kill_point(name: str) -> None:
    """SIGKILL this process here if TINYLM_KILL_AT names this point (and this visit)."""
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point not in (name, "trace"):
        return
    _reached[name] += 1
    if point == "trace":
        print(f"kill point: {name}@{_reached[name]}", file=sys.stderr, flush=True)
    elif _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
