"""`tinylm serve` over real HTTP on 127.0.0.1, driven by the official openai client."""

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from tinylm.serve.app import Choice, ServeConfig
from tinylm.serve.engine import TokenEvent
from tinylm.serve.server import ServerThread, load_models


@pytest.fixture(scope="module")
def url(tiny_run):
    """The tiny run served twice (names tiny and other), default limits but a small body cap."""
    models = load_models([f"tiny={tiny_run}", f"other={tiny_run}"], "cpu", "fp32")
    with ServerThread(models, ServeConfig(max_body_bytes=20_000)) as url:
        yield url


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def complete(client, **kw):
    return client.completions.create(model="tiny", **kw)


# --- completions ---------------------------------------------------------------------


def test_models_and_health(client, url):
    assert [m.id for m in client.models.list().data] == ["tiny", "other"]
    assert client.models.retrieve("other").id == "other"
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["models"] == ["tiny", "other"]


def test_completion_text_usage_and_finish(client):
    r = complete(client, prompt="The history of", max_tokens=8, seed=1)
    choice = r.choices[0]
    assert choice.finish_reason == "length" and choice.text
    assert r.usage.prompt_tokens == 3 and r.usage.completion_tokens == 8
    assert r.usage.total_tokens == 11 and r.model == "tiny" and r.object == "text_completion"


def test_seed_reproduces_and_token_prompts_equal_text_prompts(client):
    a = complete(client, prompt="The history of", max_tokens=10, seed=5, temperature=1.0)
    b = complete(client, prompt=[464, 2106, 286], max_tokens=10, seed=5, temperature=1.0)
    c = complete(client, prompt="The history of", max_tokens=10, seed=6, temperature=1.0)
    assert a.choices[0].text == b.choices[0].text != c.choices[0].text


def test_seeded_output_is_the_same_alone_and_among_concurrent_requests(client):
    kw = dict(prompt="In 1900", max_tokens=20, seed=11, temperature=0.9, top_p=0.95)
    alone = complete(client, **kw).choices[0].text
    noise = [dict(prompt="x" * (i + 1), max_tokens=5 + 3 * i, seed=i) for i in range(6)]
    with ThreadPoolExecutor(8) as pool:
        others = [pool.submit(complete, client, **n) for n in noise[:3]]
        batched = pool.submit(complete, client, **kw)
        others += [pool.submit(complete, client, **n) for n in noise[3:]]
        assert batched.result().choices[0].text == alone
        assert all(o.result().choices[0].finish_reason for o in others)


def test_n_choices_and_several_prompts(client):
    r = complete(client, prompt=["A", "B"], n=2, max_tokens=6, seed=3)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text != r.choices[1].text  # choice i draws with seed + i
    assert r.usage.prompt_tokens == 2 and r.usage.completion_tokens == 24


def test_logprobs_and_echo(client):
    r = complete(client, prompt="The history of", max_tokens=4, logprobs=2, echo=True, seed=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text.startswith("The history of")
    assert lp.tokens[:3] == ["The", " history", " of"] and len(lp.tokens) == 7
    assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
    assert all(len(top) == 2 for top in lp.top_logprobs[1:])
    assert lp.text_offset[:4] == [0, 3, 11, 14]


def test_greedy_top_logprob_is_the_chosen_token(client):
    r = complete(client, prompt="The", max_tokens=5, temperature=0, logprobs=1)
    lp = r.choices[0].logprobs
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert top == {token: pytest.approx(logprob)}


def test_stop_string_cuts_the_output_and_frees_the_request(client):
    full = complete(client, prompt="The", max_tokens=12, temperature=0).choices[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    r = complete(client, prompt="The", max_tokens=12, temperature=0, stop=[stop, "\u00a7"])
    assert r.choices[0].text == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    chunks = complete(client, prompt="The", max_tokens=12, temperature=0, stop=stop, stream=True)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == r.choices[0].text


# --- streaming -----------------------------------------------------------------------


def test_stream_equals_the_plain_response_and_ends_with_done(client, url):
    kw = dict(model="tiny", prompt="The history of", max_tokens=10, seed=2)
    plain = client.completions.create(**kw).choices[0].text
    lines = []
    body = {**kw, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == plain
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 10


def test_chat_completion_and_its_stream(client):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Tell me about history."},
    ]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, seed=4)
    reply = r.choices[0].message
    assert reply.role == "assistant" and not reply.content.startswith(" ")
    assert r.usage.prompt_tokens > 10
    stream = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, seed=4, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == reply.content and chunks[-1].choices[0].finish_reason is not None


def test_chat_logprobs(client):
    r = client.chat.completions.create(
        model="other", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
        logprobs=True, top_logprobs=2, temperature=0,
    )  # fmt: skip
    content = r.choices[0].logprobs.content
    assert len(content) == 3 and all(len(t.top_logprobs) == 2 for t in content)
    assert content[0].top_logprobs[0].token == content[0].token  # greedy took the best


def test_tokenize_and_detokenize(url):
    r = httpx.post(f"{url}/tokenize", json={"model": "tiny", "prompt": "Hello world"})
    assert r.json() == {"tokens": [15496, 995], "count": 2, "max_model_len": 32}
    r = httpx.post(f"{url}/detokenize", json={"model": "tiny", "tokens": [15496, 995]})
    assert r.json() == {"prompt": "Hello world"}


# --- errors --------------------------------------------------------------------------


def test_openai_client_sees_typed_errors(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="nope", prompt="x")
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, prompt="x", max_tokens=40)
    assert err.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, prompt="word " * 40)
    assert err.value.body["code"] == "context_length_exceeded"


BAD_REQUESTS = [
    # (path, raw body, expected status, expected param or None)
    ("/v1/completions", b"{", 400, None),
    ("/v1/completions", b"", 400, None),
    ("/v1/completions", b"[1, 2]", 400, None),
    ("/v1/completions", b'"just a string"', 400, None),
    ("/v1/completions", b'{"prompt": "x"}', 400, "model"),
    ("/v1/completions", b'{"model": "tiny"}', 400, "prompt"),
    ("/v1/completions", b'{"model": "tiny", "prompt": 5}', 400, "prompt"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "max_tokens": "5"}', 400, "max_tokens"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "max_tokens": 2.5}', 400, "max_tokens"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "max_tokens": 0}', 400, "max_tokens"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "max_tokens": -3}', 400, "max_tokens"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "temperature": -1}', 400, "temperature"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "top_p": 0}', 400, "top_p"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "stream": "yes"}', 400, "stream"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "n": 0}', 400, "n"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "n": 100}', 400, "n"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "logprobs": 9}', 400, "logprobs"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "stop": ["a","b","c","d","e"]}', 400,
     "stop"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "stop": [""]}', 400, "stop"),
    ("/v1/completions", b'{"model": "tiny", "prompt": [99999999]}', 400, "prompt"),
    ("/v1/completions", b'{"model": "tiny", "prompt": []}', 400, "prompt"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "bogus": 1}', 400, "bogus"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "best_of": 3}', 400, "best_of"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "seed": -1}', 400, "seed"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "seed": 18446744073709551616}', 400,
     "seed"),
    ("/v1/completions", b'{"model": "nope", "prompt": "x"}', 404, "model"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "' + b"x" * 30_000 + b'"}', 413, None),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": []}', 400, "messages"),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "bot", "content": "x"}]}',
     400, "messages.0.role"),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user"}]}', 400,
     "messages.0.content"),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": "hi"}', 400, "messages"),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": [null]}', 400, "messages.0"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "stream_options": 1}', 400,
     "stream_options"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "frequency_penalty": 1}', 400,
     "frequency_penalty"),
    ("/tokenize", b'{"model": "tiny", "prompt": 3}', 400, "prompt"),
    ("/detokenize", b'{"model": "tiny", "tokens": [-1]}', 400, "tokens.0"),
    ("/v1/nothing-here", b"{}", 404, None),
]  # fmt: skip


def test_malformed_requests_are_each_a_clean_4xx(url):
    assert len(BAD_REQUESTS) >= 15
    with httpx.Client(base_url=url, timeout=30) as http:
        for path, body, status, param in BAD_REQUESTS:
            r = http.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == status, (path, body[:80], r.text)
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["message"] and error["param"] == param, (body[:80], error)
        assert http.get("/v1/completions").status_code == 405
        assert http.get("/health").json()["status"] == "ok"


def test_api_key_is_required_when_set(tiny_run):
    models = load_models([f"tiny={tiny_run}"], "cpu", "fp32")
    with ServerThread(models, ServeConfig(api_key="s3cret")) as url:
        bad = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert good.completions.create(model="tiny", prompt="x", max_tokens=2).choices
        assert httpx.get(f"{url}/health").status_code == 200  # monitoring needs no key
        assert (
            httpx.post(f"{url}/tokenize", json={"model": "tiny", "prompt": "x"}).status_code == 401
        )


def test_full_queue_answers_429_and_the_rest_succeed(long_run):
    models = load_models([f"long={long_run}"], "cpu", "fp32")
    with ServerThread(models, ServeConfig(max_batch=1, max_queue=1)) as url:

        async def burst():
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                body = {"model": "long", "prompt": "x", "max_tokens": 250, "seed": 0}
                return await asyncio.gather(
                    *[http.post("/v1/completions", json=body) for _ in range(16)]
                )

        responses = asyncio.run(burst())
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) == {200, 429} and statuses.count(200) >= 2
        refused = [r for r in responses if r.status_code == 429]
        assert all(r.headers.get("retry-after") == "1" for r in refused)
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "ok" and health["active"] == health["waiting"] == 0


def test_a_client_that_disconnects_frees_its_slot_at_once(long_run):
    models = load_models([f"long={long_run}"], "cpu", "fp32")
    with ServerThread(models, ServeConfig(max_batch=1)) as url:
        body = {"model": "long", "prompt": "x", "max_tokens": 250, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
            next(r.iter_lines())  # the stream has started
        # The request would run ~250 steps; the slot is free long before that.
        for _ in range(100):
            health = httpx.get(f"{url}/health").json()
            if health["active"] == 0:
                break
            asyncio.run(asyncio.sleep(0.02))
        assert health["active"] == 0 and health["cancelled"] == 1
        assert health["steps"] < 240


# --- text in whole characters, never part of a stop string ----------------------------


def test_choice_releases_whole_characters_and_no_partial_stop():
    from tinylm.data.tokenizer import ByteTokenizer
    from tinylm.inference import TextDecoder

    tok = ByteTokenizer()
    choice = Choice(0, [0], TextDecoder(tok), stops=("<END>",))
    out = [choice.add(TokenEvent(b))[0] for b in "é <EN".encode()]
    assert out == ["", "é", " ", "", "", ""]  # é is 2 bytes; "<EN" may start <END>
    out = [choice.add(TokenEvent(b))[0] for b in b"x <END> more"]
    assert "".join(out) == "<ENx " and choice.finish == "stop"


def test_load_32_clients_no_failures_healthy_after_memory_flat(tiny_run):
    """bench/serve_load.py, bounded: 32 concurrent clients, 96 mixed requests."""
    script = Path(__file__).parent.parent / "bench" / "serve_load.py"
    args = [str(tiny_run), "--clients", "32", "--requests", "96"]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    result = json.loads(done.stdout)
    assert done.returncode == 0 and result["passed"], done.stdout + done.stderr[-2000:]
    assert result["failed"] == 0 and result["health_after"]["active"] == 0


def test_serve_command_refuses_a_busy_port_in_one_line(tiny_run, capsys):
    import socket

    from tinylm.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tiny_run), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinylm serve: error: cannot listen on 127.0.0.1:") and "\n" not in err
