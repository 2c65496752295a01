"""Each learning-rate schedule against its formula, at chosen points."""

import math

import pytest

from tinylm.config import OptimConfig
from tinylm.errors import TinyLMError
from tinylm.training.schedule import build_schedule

PEAK, MIN_RATIO = 1e-3, 0.1
MIN = PEAK * MIN_RATIO


def schedule(kind, unit="steps", warmup=100, length=0.0, budget=1000, **kw):
    cfg = OptimConfig(lr=PEAK, schedule=kind, schedule_unit=unit, warmup=warmup,
                      schedule_length=length, min_lr_ratio=MIN_RATIO, **kw)  # fmt: skip
    return build_schedule(cfg, budget_steps=budget, budget_tokens=budget * 4096)


def test_constant_is_the_study_lr_exactly():
    s = schedule("constant", warmup=0)
    assert [s.lr_at(p) for p in (1, 500, 10**9)] == [PEAK] * 3


@pytest.mark.parametrize("kind", ["constant", "cosine", "wsd"])
def test_linear_warmup(kind):
    s = schedule(kind)
    assert s.lr_at(1) == pytest.approx(PEAK / 100)
    assert s.lr_at(50) == pytest.approx(PEAK * 0.5)
    assert s.lr_at(100) == pytest.approx(PEAK)


def test_cosine_formula():
    s = schedule("cosine")  # length = the 1000-step budget

    def formula(p):
        return MIN + (PEAK - MIN) * 0.5 * (1 + math.cos(math.pi * (p - 100) / 900))

    for p in (100, 325, 550, 777, 1000):
        assert s.lr_at(p) == pytest.approx(formula(p), rel=1e-12)
    assert s.lr_at(550) == pytest.approx((PEAK + MIN) / 2)  # halfway
    assert s.lr_at(5000) == pytest.approx(MIN)  # stays at the floor after the schedule


def test_wsd_formula():
    s = schedule("wsd", decay_fraction=0.2)  # stable until 800, linear decay to 1000
    assert s.lr_at(500) == s.lr_at(799) == PEAK
    assert s.lr_at(900) == pytest.approx(MIN + (PEAK - MIN) * 0.5)
    assert s.lr_at(950) == pytest.approx(MIN + (PEAK - MIN) * 0.25)
    assert s.lr_at(1000) == pytest.approx(MIN) and s.lr_at(2000) == pytest.approx(MIN)


def test_tokens_unit_and_explicit_length():
    s = schedule("cosine", unit="tokens", warmup=1e5, length=1e6)
    assert s.lr_for(steps=1, tokens=50_000) == pytest.approx(PEAK / 2)
    assert s.lr_for(steps=2, tokens=550_000) == pytest.approx((PEAK + MIN) / 2)


def test_decaying_schedule_needs_a_length():
    cfg = OptimConfig(schedule="cosine")
    with pytest.raises(TinyLMError, match="schedule_length"):
        build_schedule(cfg, budget_steps=math.inf, budget_tokens=math.inf)
    with pytest.raises(TinyLMError, match="shorten the warmup"):
        build_schedule(OptimConfig(schedule="wsd", warmup=50), 40, 40 * 4096)
