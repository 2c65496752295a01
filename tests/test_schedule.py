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


def test_wsd_one_minus_sqrt_cooldown():
    s = schedule("wsd", decay_fraction=0.2, decay_shape="1-sqrt")  # decay from 800 to 1000
    assert s.lr_at(799) == PEAK
    assert s.lr_at(850) == pytest.approx(MIN + (PEAK - MIN) * (1 - math.sqrt(0.25)))
    assert s.lr_at(900) == pytest.approx(MIN + (PEAK - MIN) * (1 - math.sqrt(0.5)))
    assert s.lr_at(1000) == pytest.approx(MIN)
    linear = schedule("wsd", decay_fraction=0.2)
    assert s.lr_at(900) < linear.lr_at(900)  # 1-sqrt drops faster early in the cooldown


def test_time_unit_places_warmup_and_decay_in_the_minutes_budget():
    """Fractions of train.max_minutes: the position is training seconds / budget seconds,
    whatever the step or token count (a step-based decay under a time cap would decay at
    a step the run may never reach)."""
    cfg = OptimConfig(lr=PEAK, schedule="wsd", schedule_unit="time", warmup=0.1,
                      decay_fraction=0.5, min_lr_ratio=MIN_RATIO)  # fmt: skip
    s = build_schedule(cfg, budget_steps=math.inf, budget_tokens=math.inf, budget_minutes=2.0)
    assert s.lr_for(steps=10**6, tokens=1, seconds=6.0) == pytest.approx(PEAK / 2)  # 5%
    assert s.lr_for(steps=3, tokens=1, seconds=59.0) == PEAK  # stable until 50%
    assert s.lr_for(steps=3, tokens=1, seconds=90.0) == pytest.approx((PEAK + MIN) / 2)
    assert s.lr_for(steps=3, tokens=1, seconds=120.0) == pytest.approx(MIN)
    with pytest.raises(TinyLMError, match="set train.max_minutes"):
        build_schedule(cfg, math.inf, math.inf, budget_minutes=0.0)


def test_time_unit_config_is_checked():
    from tinylm.config import load_config

    with pytest.raises(TinyLMError, match="schedule_unit=time .* set train.max_minutes"):
        load_config(None, ["optim.schedule_unit=time"])
    with pytest.raises(TinyLMError, match="fractions of train.max_minutes"):
        load_config(None, ["optim.schedule_unit=time", "train.max_minutes=1", "optim.warmup=5"])
    with pytest.raises(TinyLMError, match="decay_shape='sqrt'; choose one of linear, 1-sqrt"):
        load_config(None, ["optim.decay_shape=sqrt"])
