"""The reference study's first version forgot the shift and reached near-zero loss.
These tests fail if next_token_loss shifts zero times or twice."""

import math

import pytest
import torch

from tinylm.config import MODEL_PRESETS
from tinylm.loss import chunked_next_token_loss, next_token_loss
from tinylm.model import GPT


def peaked_logits(tokens: torch.Tensor, offset: int, vocab: int) -> torch.Tensor:
    """Logits that put (almost) all mass at position t on tokens[t + offset]."""
    B, T = tokens.shape
    logits = torch.zeros(B, T, vocab)
    for t in range(T):
        src = min(t + offset, T - 1)
        logits[torch.arange(B), t, tokens[:, src]] = 30.0
    return logits


def test_only_the_one_step_shift_scores_perfect_predictions():
    torch.manual_seed(0)
    vocab = 50
    tokens = torch.randint(0, vocab, (4, 24))
    predicts_next = next_token_loss(peaked_logits(tokens, 1, vocab), tokens)
    copies_current = next_token_loss(peaked_logits(tokens, 0, vocab), tokens)  # no shift
    skips_one = next_token_loss(peaked_logits(tokens, 2, vocab), tokens)  # shifted twice
    assert predicts_next < 1e-3
    assert copies_current > 10 and skips_one > 10


def test_reductions_agree():
    torch.manual_seed(0)
    logits, tokens = torch.randn(3, 10, 20), torch.randint(0, 20, (3, 10))
    per_token = next_token_loss(logits, tokens, reduction="none")
    assert per_token.shape == (3, 9)  # T - 1 predictions per block
    assert torch.allclose(per_token.mean(), next_token_loss(logits, tokens))
    assert torch.allclose(per_token.sum(), next_token_loss(logits, tokens, reduction="sum"))


def test_loss_at_init_is_uniform_over_vocab():
    torch.manual_seed(0)
    model = GPT(MODEL_PRESETS["seed-d128"]).eval()
    tokens = torch.randint(0, 50257, (2, 128))
    loss = next_token_loss(model(tokens), tokens).item()
    assert abs(loss - math.log(50257)) < 0.1


def train_on(model, make_batch, loss_fn, steps, lr=3e-3):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        batch = make_batch()
        loss = loss_fn(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def unshifted_loss(logits, tokens):
    """The study's bug: predict the token at the same position."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())


@pytest.mark.parametrize(
    ("loss_fn", "can_reach_zero"), [(next_token_loss, False), (unshifted_loss, True)]
)
def test_random_tokens_cannot_be_learned_unless_the_shift_is_missing(
    small_model_config, loss_fn, can_reach_zero
):
    """Fresh random tokens each step carry no learnable signal: a correct loss stays
    near ln(vocab). The buggy loss lets the model copy its input and reach ~0."""
    torch.manual_seed(0)
    model = GPT(small_model_config)
    loss = train_on(model, lambda: torch.randint(0, 64, (16, 32)), loss_fn, steps=150)
    if can_reach_zero:
        assert loss < 0.5
    else:
        assert loss > math.log(64) - 0.3


def test_memorises_a_short_fixed_sequence(small_model_config):
    torch.manual_seed(0)
    model = GPT(small_model_config)
    sequence = torch.randint(0, 64, (1, 32))
    loss = train_on(model, lambda: sequence, next_token_loss, steps=150)
    assert loss < 0.05


def _loss_and_grads(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("chunk_size", [7, 1000])  # uneven chunks; one chunk for everything
def test_chunked_loss_equals_plain_loss_in_value_and_gradients(small_model_config, chunk_size):
    torch.manual_seed(0)
    model = GPT(small_model_config)
    tokens = torch.randint(0, 64, (3, 17))
    plain, plain_grads = _loss_and_grads(model, lambda: next_token_loss(model(tokens), tokens))
    chunked, chunked_grads = _loss_and_grads(
        model, lambda: chunked_next_token_loss(model, tokens, chunk_size=chunk_size)
    )
    assert torch.allclose(plain, chunked, rtol=1e-6)
    for name, grad in plain_grads.items():
        assert torch.allclose(grad, chunked_grads[name], rtol=1e-4, atol=1e-7), name
    for reduction in ("sum", "none"):
        with torch.no_grad():
            expected = next_token_loss(model(tokens), tokens, reduction=reduction)
            got = chunked_next_token_loss(model, tokens, reduction, chunk_size=chunk_size)
        assert got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-5)


def test_chunked_loss_under_bf16_autocast_is_close_to_fp32(small_model_config):
    """bf16 matmuls, fp32 softmax: the loss agrees to ~3 digits, gradients to a few %."""
    torch.manual_seed(0)
    model = GPT(small_model_config)
    tokens = torch.randint(0, 64, (4, 32))
    ref, ref_grads = _loss_and_grads(model, lambda: next_token_loss(model(tokens), tokens))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, grads = _loss_and_grads(model, lambda: chunked_next_token_loss(model, tokens))
    assert abs(got.item() - ref.item()) < 5e-3 * ref.item()
    for name in ("lm_head.weight", "blocks.0.attn.qkv.weight", "wte.weight"):
        rel = (grads[name] - ref_grads[name]).norm() / ref_grads[name].norm()
        assert rel < 0.05, (name, rel.item())


def test_chunked_loss_never_materialises_the_full_logits(small_model_config):
    """No tensor is bigger than chunk_size x V or the V x C weights; the plain loss makes
    B*T x V logits and a gradient of the same size."""
    import dataclasses

    cfg = dataclasses.replace(small_model_config, vocab_size=4096)
    model = GPT(cfg)
    tokens = torch.randint(0, 4096, (8, 32))
    sizes = []

    def record(tensor):
        sizes.append(tensor.numel())
        return tensor

    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, tuple | list) else [out]:
                if isinstance(t, torch.Tensor):
                    record(t)
            return out

    with Largest():
        chunked_next_token_loss(model, tokens, chunk_size=16).backward()
    assert max(sizes) == 4096 * cfg.n_embd  # the weights (and their gradient) are the largest
    sizes.clear()
    with Largest():
        next_token_loss(model(tokens), tokens).backward()
    assert max(sizes) == 8 * 32 * 4096


def test_fp16_weight_gradient_does_not_overflow_on_repeated_targets():
    """256 near-identical positions with one target: each row adds ~1024 * |h| to the same
    gradient entries, a sum past fp16's 65504 unless it is accumulated in fp32."""
    from tinylm.loss import _LinearCrossEntropy

    torch.manual_seed(0)
    h = (torch.ones(256, 64) * 4 + 0.01 * torch.randn(256, 64)).requires_grad_()
    weight = (0.02 * torch.randn(512, 64)).requires_grad_()
    targets = torch.full((256,), 5)
    grads = {}
    for dtype in (torch.float32, torch.float16):
        h.grad = weight.grad = None
        _LinearCrossEntropy.apply(h, weight, targets, 256, dtype).backward()
        grads[dtype] = weight.grad.clone()
    assert torch.isfinite(grads[torch.float16]).all()
    assert grads[torch.float32].abs().max() > 65504 / 1024  # the fp16 sum would overflow
    torch.testing.assert_close(grads[torch.float16], grads[torch.float32], rtol=2e-2, atol=1e-2)


def test_output_layer_chunks_adapt_to_the_vocabulary():
    """On a CPU: 256 positions per chunk at GPT-2's vocabulary (the measured best), a whole
    16x128 batch in one chunk at 256 byte tokens; never more positions than there are."""
    from tinylm.loss import chunk_positions

    cpu = torch.device("cpu")
    assert chunk_positions(32 * 127, 50257, cpu, torch.bfloat16) == 256
    assert chunk_positions(16 * 127, 256, cpu, torch.float32) == 16 * 127
    assert chunk_positions(10, 256, cpu, torch.float32) == 10
    assert chunk_positions(10**6, 10**9, cpu, torch.float32) == 1
