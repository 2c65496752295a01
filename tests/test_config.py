import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from tinylm.config import MODEL_PRESETS, load_config
from tinylm.errors import TinyLMError

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize(
    ("name", "n_embd", "lr", "batch"),
    [("seed_exp1", 128, 1e-3, 32), ("seed_exp2", 128, 5e-4, 32), ("seed_exp3", 256, 5e-4, 16)],
)
def test_reference_presets_match_the_study(name, n_embd, lr, batch):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd) == (2, 4, n_embd)
    assert (cfg.model.block_size, cfg.model.vocab_size, cfg.model.dropout) == (128, 50257, 0.1)
    assert not cfg.model.tie_embeddings
    assert cfg.optim.lr == lr and cfg.train.batch_size == batch and cfg.train.epochs == 2
    assert cfg.optim.weight_decay == 0.01 and cfg.optim.grad_clip == 1.0


SWEEPS = [
    "ablation_epochs",
    "ablations",
    "recipe_baseline_search",
    "recipe_finals_30min",
    "recipe_finals_5min",
    "recipe_search",
    "seed_study",
]
CONFIG_FILES = [
    "recipe_30min",
    "recipe_5min",
    "recipe_baseline",
    "recipe_centre",
    "seed_exp1",
    "seed_exp2",
    "seed_exp3",
]


def test_every_shipped_config_builds_a_model_that_runs():
    from tinylm.model import GPT

    configs = sorted(p for p in CONFIGS.glob("*.yaml") if p.stem not in SWEEPS)
    assert [p.stem for p in configs] == CONFIG_FILES
    for path in configs:
        cfg = load_config(path)
        # vocab_size 0 takes the dataset's; the recipe's datasets use gpt2-8192
        model_config = dataclasses.replace(cfg.model, vocab_size=cfg.model.vocab_size or 8192)
        model = GPT(model_config)
        logits = model(torch.zeros(2, 8, dtype=torch.long))
        assert logits.shape == (2, 8, model_config.vocab_size), path.name


def test_the_recipe_is_one_preset_at_both_budgets():
    five, thirty = (
        load_config(CONFIGS / "recipe_5min.yaml"),
        load_config(CONFIGS / "recipe_30min.yaml"),
    )
    assert five.model == thirty.model == MODEL_PRESETS["recipe-d256"]
    assert (five.train.max_minutes, thirty.train.max_minutes) == (5, 30)
    assert five.optim == thirty.optim and five.optim.schedule_unit == "time"
    assert five.data.path.endswith("gpt2-8192")
    # The search's centre, resolved, is the recipe's model (its seed-1337 run is the recipe's).
    centre = load_config(CONFIGS / "recipe_centre.yaml")
    assert dataclasses.replace(centre.model, vocab_size=8192) == five.model


def test_every_shipped_sweep_builds_valid_configs():
    from tinylm.sweep import check_configs, load_sweep

    assert sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem in SWEEPS) == SWEEPS
    for name in SWEEPS:
        path = CONFIGS / f"{name}.yaml"
        scales = yaml.safe_load(path.read_text()).get("scales") or {}
        for scale in [None, *scales]:
            sweep = load_sweep(path, scale)
            check_configs(sweep)  # every run's config, as `tinylm sweep` builds it
            assert sweep.runs
    study = load_sweep(CONFIGS / "seed_study.yaml", "cpu")
    exp3 = load_config(study.base, study.runs[2].overrides)
    assert [r.name for r in study.runs] == ["exp1", "exp2", "exp3"]
    assert (exp3.model.n_embd, exp3.optim.lr, exp3.train.batch_size) == (256, 5e-4, 16)
    assert exp3.train.epochs == 2 and exp3.data.path == "data/wiki-study"


def test_override_strings_are_taken_as_written():
    cfg = load_config(None, ["data.path=@yes: 0123", "model.bias=no", "train.max_steps=1e3"])
    assert cfg.data.path == "@yes: 0123"
    assert cfg.model.bias is False and cfg.train.max_steps == 1000


def test_dotted_overrides_are_typed():
    cfg = load_config(CONFIGS / "seed_exp1.yaml", ["optim.lr=5e-4", "train.batch_size=16"])
    assert cfg.optim.lr == 5e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.batch_size == 16


def test_preset_then_keys_override_it():
    cfg = load_config(None, ["model=seed-d256", "model.dropout=0.0"])
    assert cfg.model.n_embd == MODEL_PRESETS["seed-d256"].n_embd == 256
    assert cfg.model.dropout == 0.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1e-3", "did you mean optim.lr?"),
        ("train.lr=5e-4", "unknown config key train.lr; did you mean optim.lr?"),
        ("trian.batch_size=4", "did you mean train?"),
        ("train.batch_size=many", "train.batch_size: expected an integer"),
        ("model=seed-d512", "unknown model preset"),
        ("model.n_head=3", "not divisible"),
        ("lr", "section.key=value"),
    ],
)
def test_bad_settings_name_the_problem(override, message):
    with pytest.raises(TinyLMError, match=message.replace("?", r"\?")):
        load_config(None, [override])


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(TinyLMError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(TinyLMError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
