"""The batched decoding engine: same tokens as tinylm.generate, alone or batched."""

import queue

import pytest
import torch

from tinylm.config import ModelConfig
from tinylm.generate import generate
from tinylm.model import GPT
from tinylm.serve.engine import Engine, EngineConfig, Overloaded, Request, SamplingParams


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, block_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    return GPT(cfg).eval()


@pytest.fixture
def engine(model):
    eng = Engine({"m": model}, EngineConfig(max_batch=4, max_queue=16))
    eng.start()
    yield eng
    eng.stop()


def submit(engine, prompt, params):
    events = queue.Queue()
    request = Request("m", prompt, params, events.put)
    engine.submit(request)
    return request, events


def drain(events, timeout=30):
    tokens = []
    while True:
        ev = events.get(timeout=timeout)
        if ev.token is not None:
            tokens.append(ev.token)
        if ev.finish is not None:
            return tokens, ev.finish


def test_greedy_equals_generate_alone_and_in_a_batch(engine, model):
    prompts = [[1, 2, 3, 4, 5], [9] * 11, [7]]
    refs = [generate(model, torch.tensor([p]), 20, temperature=0)[0, len(p) :].tolist()
            for p in prompts]  # fmt: skip
    alone = drain(submit(engine, prompts[0], SamplingParams(20, temperature=0))[1])
    assert alone == (refs[0], "length")
    # Three rows of different lengths share every step (per-row positions and masks).
    pending = [submit(engine, p, SamplingParams(20, temperature=0))[1] for p in prompts]
    assert [drain(q)[0] for q in pending] == refs


def test_seeded_sample_is_the_same_alone_or_batched(engine):
    params = SamplingParams(30, temperature=0.9, top_k=20, top_p=0.9, seed=3)
    alone = drain(submit(engine, [7, 8, 9], params)[1])
    # Others join before and after it, and leave early (5 tokens) or late (40 tokens).
    others = [
        submit(engine, [1] * 10, SamplingParams(40, temperature=1.0, seed=1)),
        submit(engine, [5, 6], SamplingParams(5, temperature=1.0, seed=9)),
    ]
    batched = submit(engine, [7, 8, 9], params)
    late = submit(engine, [2, 3], SamplingParams(12, temperature=0.5, seed=4))
    assert drain(batched[1]) == alone
    for _, events in [*others, late]:
        drain(events)
    other_seed = drain(submit(engine, [7, 8, 9], SamplingParams(30, temperature=0.9, seed=4))[1])
    assert other_seed != alone


def test_stop_token_ends_a_request_without_emitting_it(engine, model):
    first = generate(model, torch.tensor([[1, 2]]), 3, temperature=0)[0, 2:].tolist()
    tokens, finish = drain(
        submit(engine, [1, 2], SamplingParams(10, temperature=0, stop_ids=frozenset({first[2]})))[1]
    )
    assert (tokens, finish) == (first[:2], "stop")


def test_logprobs_are_the_model_distribution(engine, model):
    request, events = submit(engine, [3, 4], SamplingParams(1, temperature=0, logprobs=3))
    ev = events.get(timeout=30)
    with torch.no_grad():
        logits = model(torch.tensor([[3, 4]]))[0, -1]
    lp = logits.log_softmax(-1)
    assert ev.token == int(logits.argmax())
    assert ev.logprob == pytest.approx(float(lp.max()), abs=1e-5)
    assert [t for t, _ in ev.top] == lp.topk(3).indices.tolist()


def test_cancel_frees_the_slot(engine):
    request, events = submit(engine, [1], SamplingParams(60, temperature=1.0, seed=0))
    assert events.get(timeout=30).token is not None  # it is running
    request.cancel()
    engine.wake()
    tokens, finish = drain(events)
    assert finish == "cancelled" and len(tokens) < 59
    assert engine.stats()["active"] == 0 and engine.stats()["cancelled"] == 1


def test_a_full_queue_refuses_new_requests(model):
    engine = Engine({"m": model}, EngineConfig(max_batch=1, max_queue=2))  # not started
    params = SamplingParams(5, temperature=0)
    engine.submit(Request("m", [1], params, print), Request("m", [2], params, print))
    with pytest.raises(Overloaded):
        engine.submit(Request("m", [3], params, print))
