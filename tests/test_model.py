import dataclasses

import pytest
import torch

from tinylm.config import MODEL_PRESETS
from tinylm.model import GPT


def reference_count(vocab: int, block: int, n_layer: int, c: int) -> int:
    """The study's arithmetic: untied embedding and output layer, position table, blocks."""
    per_block = (
        2 * (2 * c) + (c * 3 * c + 3 * c) + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c)
    )
    return 2 * vocab * c + block * c + n_layer * per_block + 2 * c


@pytest.mark.parametrize(("preset", "millions"), [("seed-d128", 13.3), ("seed-d256", 27.3)])
def test_presets_reproduce_reference_parameter_counts(preset, millions):
    cfg = MODEL_PRESETS[preset]
    n = GPT(cfg).num_parameters()
    assert round(n / 1e6, 1) == millions
    assert n == reference_count(cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd)


def test_tied_embeddings_share_one_matrix():
    cfg = MODEL_PRESETS["seed-d128"]
    untied = GPT(cfg).num_parameters()
    tied = GPT(dataclasses.replace(cfg, tie_embeddings=True))
    assert tied.num_parameters() == untied - cfg.vocab_size * cfg.n_embd
    assert tied.lm_head.weight is tied.wte.weight


def test_logits_shape(small_model_config):
    model = GPT(small_model_config)
    idx = torch.randint(0, 64, (3, 17))
    assert model(idx).shape == (3, 17, 64)


def test_attention_is_causal(small_model_config):
    """Changing token t must not change the logits at any earlier position."""
    torch.manual_seed(0)
    model = GPT(small_model_config).eval()
    idx = torch.randint(0, 64, (1, 20))
    changed = idx.clone()
    changed[0, 12] = (changed[0, 12] + 1) % 64
    a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-6)


def test_dropout_only_in_training(small_model_config):
    model = GPT(dataclasses.replace(small_model_config, dropout=0.5))
    idx = torch.randint(0, 64, (2, 16))
    model.eval()
    assert torch.equal(model(idx), model(idx))
    model.train()
    assert not torch.equal(model(idx), model(idx))


def test_too_long_sequence_is_refused(small_model_config):
    with pytest.raises(ValueError, match="exceeds block_size"):
        GPT(small_model_config)(torch.zeros(1, 33, dtype=torch.long))
