"""Learning-rate schedules: a pure function of how far training has got.

The position `p` is the number of optimizer steps (or training tokens) done once the
current step is taken, so the first step has p = 1 (or its token count). With peak lr
L, minimum m = L * min_lr_ratio, warmup W and schedule length S (both in p's unit):

    warmup (any schedule, p < W):   L * p / W
    constant:                        L
    cosine (W <= p):                 m + (L - m) * (1 + cos(pi * min(1, (p - W) / (S - W)))) / 2
    wsd    (W <= p < S - D):         L                       D = decay_fraction * S
           (S - D <= p):             m + (L - m) * max(0, 1 - (p - (S - D)) / D)

Being a function of (step, tokens) alone, the schedule needs no state in a checkpoint:
a resumed run recomputes exactly the same value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinylm.config import OptimConfig
from tinylm.errors import TinyLMError


@dataclass(frozen=True)
class Schedule:
    kind: str
    peak: float
    min_lr: float
    warmup: float
    length: float
    """Where the decay ends (same unit as warmup); unused by 'constant'."""
    decay_fraction: float
    unit: str
    """'steps' or 'tokens': which position lr_at is given."""

    def lr_at(self, position: float) -> float:
        """The learning rate of the step that brings training to `position`."""
        p, peak = position, self.peak
        if p < self.warmup:
            return peak * p / self.warmup
        if self.kind == "constant":
            return peak
        if self.kind == "cosine":
            progress = min(1.0, (p - self.warmup) / (self.length - self.warmup))
            return self.min_lr + (peak - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        # wsd: stable at the peak, then a linear decay over the last decay_fraction.
        decay = self.decay_fraction * self.length
        decay_start = max(self.warmup, self.length - decay)
        if p < decay_start:
            return peak
        progress = min(1.0, (p - decay_start) / max(self.length - decay_start, 1e-12))
        return self.min_lr + (peak - self.min_lr) * (1.0 - progress)

    def lr_for(self, steps: int, tokens: int) -> float:
        return self.lr_at(steps if self.unit == "steps" else tokens)


def build_schedule(cfg: OptimConfig, budget_steps: float, budget_tokens: float) -> Schedule:
    """The schedule `cfg` asks for; a length of 0 means the run's budget in its unit.

    budget_steps / budget_tokens are math.inf when only a time budget is set, which
    only a constant schedule (or an explicit schedule_length) can work with.
    """
    budget = budget_steps if cfg.schedule_unit == "steps" else budget_tokens
    length = cfg.schedule_length or budget
    if cfg.schedule != "constant":
        if not math.isfinite(length):
            raise TinyLMError(
                f"optim.schedule={cfg.schedule} needs a length but the run has only a time "
                f"budget; set optim.schedule_length (in {cfg.schedule_unit})"
            )
        if cfg.warmup >= length:
            raise TinyLMError(
                f"optim.warmup={cfg.warmup:g} {cfg.schedule_unit} is not shorter than the "
                f"schedule ({length:g} {cfg.schedule_unit}); shorten the warmup"
            )
    return Schedule(
        kind=cfg.schedule,
        peak=cfg.lr,
        min_lr=cfg.lr * cfg.min_lr_ratio,
        warmup=cfg.warmup,
        length=length,
        decay_fraction=cfg.decay_fraction,
        unit=cfg.schedule_unit,
    )
