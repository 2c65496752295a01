import math

import numpy as np
import torch

from tinylm.data.tokenizer import get_tokenizer
from tinylm.evaluate import evaluate
from tinylm.loss import next_token_loss
from tinylm.model import GPT


def test_metrics_are_token_weighted_over_the_whole_split(small_model_config):
    torch.manual_seed(0)
    model = GPT(small_model_config).eval()
    tokens = np.random.default_rng(0).integers(0, 64, size=32 * 5 + 7).astype(np.uint16)
    byte_table = np.arange(64) % 3  # any per-token byte lengths
    r = evaluate(
        model, tokens, 32, batch_size=2, device=torch.device("cpu"), token_bytes=byte_table
    )

    # Reference: every block separately, summed in nats.
    blocks = [tokens[i : i + 32] for i in range(0, 160, 32)] + [tokens[160:]]
    nats, count, nbytes = 0.0, 0, 0
    for block in blocks:
        x = torch.from_numpy(block.astype(np.int64))[None]
        nats += next_token_loss(model(x), x, reduction="sum").item()
        count += x.shape[1] - 1
        nbytes += byte_table[block[1:]].sum()
    assert r.tokens == count == len(tokens) - len(blocks)
    assert math.isclose(r.loss, nats / count, rel_tol=1e-5)
    assert math.isclose(r.perplexity, math.exp(nats / count), rel_tol=1e-5)
    assert math.isclose(r.bits_per_byte, nats / math.log(2) / nbytes, rel_tol=1e-5)


def test_bits_per_byte_with_gpt2_bytes(tiny_run, wiki_data):
    from tinylm.data.dataset import PreparedDataset
    from tinylm.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_run)
    ds = PreparedDataset.open(wiki_data)
    tok = get_tokenizer("gpt2")
    r = evaluate(ckpt.model, ds.tokens("val"), 32, 16, torch.device("cpu"), tok.token_bytes)
    # English GPT-2 tokens average ~4.5 bytes, so bits/byte ≈ loss / ln2 / 4.5.
    assert 3.5 < r.loss / math.log(2) / r.bits_per_byte < 5.5


def test_batch_size_and_precision_leave_the_numbers(small_model_config):
    """The blocks evaluated depend on max_batches alone, not on the batch they run in; bf16
    autocast stays within 1e-2 of fp32 (its logits round to 8 bits of mantissa)."""
    torch.manual_seed(0)
    model = GPT(small_model_config)
    tokens = np.random.default_rng(1).integers(0, 64, size=32 * 40 + 5).astype(np.uint16)
    cpu = torch.device("cpu")
    whole = evaluate(model, tokens, 32, batch_size=3, device=cpu)
    auto = evaluate(model, tokens, 32, device=cpu)  # batch 0: as many as fit
    assert auto.tokens == whole.tokens == len(tokens) - 41
    assert math.isclose(auto.loss, whole.loss, rel_tol=1e-6)
    first = evaluate(model, tokens, 32, batch_size=4, device=cpu, max_batches=3)
    assert first.tokens == 3 * 4 * 31  # the first 12 blocks, no tail
    by_hand = evaluate(model, tokens[: 12 * 32], 32, batch_size=5, device=cpu)
    assert math.isclose(first.loss, by_hand.loss, rel_tol=1e-6)
    bf16 = evaluate(model, tokens, 32, device=cpu, precision="bf16")
    assert bf16.tokens == whole.tokens and abs(bf16.loss - whole.loss) < 1e-2 * whole.loss
    assert model.training  # evaluate restores the mode it found


def test_long_splits_show_progress(small_model_config, capsys, monkeypatch):
    import tinylm.evaluate as ev

    model = GPT(small_model_config)
    tokens = np.zeros(32 * 20, dtype=np.uint16)
    evaluate(model, tokens, 32, device=torch.device("cpu"))
    assert "tok" not in capsys.readouterr().err  # short: no bar
    monkeypatch.setattr(ev, "PROGRESS_TOKENS", 100)
    evaluate(model, tokens, 32, device=torch.device("cpu"), desc="eval val")
    err = capsys.readouterr().err
    assert "eval val" in err and "640/640" in err and "tok/s" in err
