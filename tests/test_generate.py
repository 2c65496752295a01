import torch

from tinylm.generate import FINISHED, generate, generate_batch, sample_next, stream
from tinylm.model import GPT


def test_greedy_is_deterministic_and_equals_top_k_1(small_model_config):
    torch.manual_seed(0)
    model = GPT(small_model_config)
    idx = torch.randint(0, 64, (2, 5))
    greedy = generate(model, idx, 10, temperature=0)
    again = generate(model, idx, 10, temperature=0)
    top1 = generate(
        model, idx, 10, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(1)
    )
    assert greedy.shape == (2, 15)
    assert torch.equal(greedy, again) and torch.equal(greedy, top1)
    assert torch.equal(greedy[:, :5], idx)


def test_seed_reproduces_samples(small_model_config):
    model = GPT(small_model_config)
    idx = torch.zeros(3, 1, dtype=torch.long)
    a = generate(model, idx, 20, generator=torch.Generator().manual_seed(5))
    b = generate(model, idx, 20, generator=torch.Generator().manual_seed(5))
    c = generate(model, idx, 20, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_context_longer_than_block_size_is_cropped(small_model_config):
    model = GPT(small_model_config)
    out = generate(model, torch.zeros(1, 30, dtype=torch.long), 10, temperature=0)
    assert out.shape == (1, 40)


def test_top_k_and_top_p_restrict_the_candidates():
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0, -1.0]])
    gen = torch.Generator().manual_seed(0)
    drawn = {sample_next(logits, 1.0, 2, 1.0, gen).item() for _ in range(200)}
    assert drawn == {0, 1}
    # p(0) ≈ 0.71, p(0)+p(1) ≈ 0.97: top_p 0.9 keeps exactly the first two.
    drawn = {sample_next(logits, 1.0, 0, 0.9, gen).item() for _ in range(200)}
    assert drawn == {0, 1}
    assert {sample_next(logits, 1.0, 0, 0.5, gen).item() for _ in range(50)} == {0}


def test_stop_token_ends_generation(small_model_config):
    model = GPT(small_model_config)
    idx = torch.zeros(1, 3, dtype=torch.long)
    first = generate(model, idx, 1, temperature=0)[0, -1].item()
    out = generate(model, idx, 10, temperature=0, stop_token=first)
    assert out.shape == (1, 4) and out[0, -1].item() == first


def test_kv_cache_greedy_equals_no_cache_greedy(small_model_config):
    """Past block_size (32) too: 20 + 20 tokens crosses it, where the cache gives way."""
    torch.manual_seed(0)
    model = GPT(small_model_config)
    idx = torch.randint(0, 64, (3, 20))
    cached = generate(model, idx, 20, temperature=0, use_cache=True)
    plain = generate(model, idx, 20, temperature=0, use_cache=False)
    assert torch.equal(cached, plain)


def test_batch_of_prompts_of_different_lengths_equals_each_alone(small_model_config):
    """Left padding must be invisible: each row generates what it would on its own."""
    torch.manual_seed(0)
    model = GPT(small_model_config)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [9], [10, 11, 12]]
    batch = generate_batch(model, prompts, 30, temperature=0)  # crosses block_size too
    for prompt, new in zip(prompts, batch, strict=True):
        alone = generate(model, torch.tensor([prompt]), 30, temperature=0, use_cache=False)
        assert new == alone[0, len(prompt) :].tolist()


def test_stream_marks_finished_rows_and_stops_when_all_are_done(small_model_config):
    torch.manual_seed(0)
    model = GPT(small_model_config)
    prompts = [[1, 2], [3]]
    first = [row[0] for row in generate_batch(model, prompts, 1, temperature=0)]
    steps = list(stream(model, prompts, 10, temperature=0, stop_tokens=[first[0]]))
    assert steps[0][0].item() == first[0]  # row 0 stops at once (its stop token is yielded) ...
    assert all(s[0].item() == FINISHED for s in steps[1:])  # ... and is FINISHED after it
    assert len(steps) == 10 or steps[-1][1].item() == first[0]


def test_draw_follows_the_distribution_and_never_picks_zero_probability():
    from tinylm.generate import draw, uniform

    probs = torch.tensor([[0.5, 0.0, 0.2, 0.3]]).repeat(4000, 1)
    drawn = draw(probs, uniform(4000, torch.Generator().manual_seed(0), "cpu")).flatten()
    freq = torch.bincount(drawn, minlength=4).float() / len(drawn)
    assert freq[1] == 0
    assert torch.allclose(freq, probs[0], atol=0.03)
    again = draw(probs, uniform(4000, torch.Generator().manual_seed(0), "cpu")).flatten()
    assert torch.equal(drawn, again)


def test_nucleus_among_candidates_equals_ranking_the_whole_vocabulary():
    from tinylm import generate as gen

    torch.manual_seed(0)
    peaked = torch.randn(3, 5000) * 4  # the nucleus sits within the top 1024
    flat = torch.randn(3, 5000) * 0.1  # the nucleus is wider: every token is ranked
    for logits in (peaked, flat):
        for top_p in (0.3, 0.9):
            fast = gen._nucleus(logits, top_p)
            old = gen.NUCLEUS_CANDIDATES
            gen.NUCLEUS_CANDIDATES = logits.shape[-1]
            try:
                full = gen._nucleus(logits, top_p)
            finally:
                gen.NUCLEUS_CANDIDATES = old
            assert torch.equal(fast.isinf(), full.isinf())
            kept = (~fast.isinf()).sum(dim=-1)
            assert (kept >= 1).all() and (kept < logits.shape[-1]).all()
