"""Progress bars for long work: what, how far, rate, ETA (tqdm on stderr).

On a terminal the bar refreshes twice a second; in a log file (CI, nohup) it writes a
line every 30 seconds instead of flooding the log.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(total: float | None, desc: str, unit: str = "it", **kwargs) -> tqdm:
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5 if interactive else 30.0,
        leave=True,
        **kwargs,
    )
