"""Learning-rate schedules: a pure function of how far training has got.

The position `p` is the number of optimizer steps (or training tokens) done once the
current step is taken, so the first step has p = 1 (or its token count); with unit
'time' it is the training time so far over the time budget (train.max_minutes), a
fraction from 0 to 1. With peak lr L, minimum m = L * min_lr_ratio, warmup W and schedule
length S (both in p's unit):

    warmup (any schedule, p < W):   L * p / W
    constant:                        L
    cosine (W <= p):                 m + (L - m) * (1 + cos(pi * min(1, (p - W) / (S - W)))) / 2
    wsd    (W <= p < S - D):         L                       D = decay_fraction * S
           (S - D <= p):             m + (L - m) * f(min(1, (p - (S - D)) / D))
                                     f(x) = 1 - x (linear) or 1 - sqrt(x) (1-sqrt)

Being a function of (step, tokens, training seconds) alone, the schedule needs no state
in a checkpoint: a resumed run recomputes the same value (for 'time', from the training
seconds the checkpoint records, so the schedule continues where it stopped).
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
    """'steps', 'tokens' or 'time': which position lr_at is given."""
    decay_shape: str = "linear"
    """WSD's cooldown: 'linear' or '1-sqrt'."""
    budget_seconds: float = 0.0
    """Unit 'time' only: the time budget the position is a fraction of."""

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
        left = 1.0 - (math.sqrt(progress) if self.decay_shape == "1-sqrt" else progress)
        return self.min_lr + (peak - self.min_lr) * left

    def lr_for(self, steps: int, tokens: int, seconds: float = 0.0) -> float:
        """The LR after `steps` steps, `tokens` tokens and `seconds` of training time."""
        if self.unit == "time":
            return self.lr_at(seconds / self.budget_seconds)
        return self.lr_at(steps if self.unit == "steps" else tokens)


def build_schedule(
    cfg: OptimConfig, budget_steps: float, budget_tokens: float, budget_minutes: float = 0.0
) -> Schedule:
    """The schedule `cfg` asks for; a length of 0 means the run's budget in its unit.

    budget_steps / budget_tokens are math.inf when only a time budget is set, which
    a constant schedule, an explicit schedule_length or the 'time' unit can work with.
    """
    budgets = {"steps": budget_steps, "tokens": budget_tokens, "time": 1.0}
    length = cfg.schedule_length or budgets[cfg.schedule_unit]
    if cfg.schedule_unit == "time" and budget_minutes <= 0:
        raise TinyLMError(
            "optim.schedule_unit=time places the schedule in the time budget; set train.max_minutes"
        )
    if cfg.schedule != "constant":
        if not math.isfinite(length):
            raise TinyLMError(
                f"optim.schedule={cfg.schedule} needs a length but the run has only a time "
                f"budget; set optim.schedule_unit=time (fractions of train.max_minutes) or "
                f"optim.schedule_length (in {cfg.schedule_unit})"
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
        decay_shape=cfg.decay_shape,
        budget_seconds=budget_minutes * 60.0,
    )
