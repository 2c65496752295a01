"""Speed of `tinylm serve`, measured in one process on the same weights (a few minutes).

    PYTHONPATH=src flock /tmp/tinylm-heavy.lock python bench/serve_bench.py

Sections:
  decode   batch-1 greedy decoding, tokens/s: the serving engine (no HTTP) vs transformers'
           GPT2LMHeadModel.generate vs tinylm.generate, the same seed-d128 weights (fp32),
           runs interleaved, medians
  clients  the real server on 127.0.0.1 (in this process), streaming /v1/completions:
           1 client vs 8 concurrent clients, aggregate tokens/s (interleaved rounds,
           medians), time to first token and inter-token latency p50/p99

The model is seed-d128 (13.3M parameters, GPT-2 vocabulary, context 128) after one
training step: its speed is that of any seed-d128 run, and it never ends early (every
request produces max_tokens tokens, checked). Writes bench/serve_results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # tinylm's default, for both sides

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
PROMPT_TOKENS = 16


def make_run(tmp: Path) -> Path:
    """A seed-d128 run (one training step on builtin:wiki) to serve."""
    from tinylm.cli import main

    data, run = tmp / "wiki", tmp / "run"
    assert main(["prepare", "builtin:wiki", "--out", str(data)]) == 0
    settings = [
        "model=seed-d128",
        "train.max_steps=1",
        "train.batch_size=2",
        "train.eval_batches=1",
    ]
    assert main(["train", f"data.path={data}", *settings, "--out", str(run)]) == 0
    return run


# ---------------------------------------------------------------- batch-1 decoding


def decode(run: Path, rounds: int, new_tokens: int) -> dict:
    import queue

    from transformers import GPT2Config, GPT2LMHeadModel

    from tinylm.generate import generate
    from tinylm.inference import load_for_inference
    from tinylm.interop.gpt2 import gpt2_config, to_gpt2_state_dict
    from tinylm.serve.engine import Engine, Request, SamplingParams

    loaded = load_for_inference(run, "cpu", "fp32")
    model = loaded.model
    eot = loaded.tokenizer.eot_id
    hf = GPT2LMHeadModel(GPT2Config(**gpt2_config(model.config, eot, eot))).eval()
    missing, unexpected = hf.load_state_dict(to_gpt2_state_dict(model), strict=False)
    assert not unexpected and all(k.endswith("attn.bias") for k in missing), missing
    prompt = torch.randint(
        0, model.config.vocab_size, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0)
    )
    engine = Engine({"m": model})
    engine.start()

    def run_engine() -> list[int]:
        events: queue.Queue = queue.Queue()
        params = SamplingParams(new_tokens, temperature=0)
        engine.submit(Request("m", prompt[0].tolist(), params, events.put))
        out = []
        while (ev := events.get()).finish is None:
            out.append(ev.token)
        return out

    @torch.no_grad()
    def run_transformers() -> list[int]:
        out = hf.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=eot,
        )
        return out[0, PROMPT_TOKENS:].tolist()

    @torch.no_grad()
    def run_generate() -> list[int]:
        return generate(model, prompt, new_tokens, temperature=0)[0, PROMPT_TOKENS:].tolist()

    impls = {
        "engine": run_engine,
        "transformers": run_transformers,
        "tinylm.generate": run_generate,
    }
    outputs = {name: fn() for name, fn in impls.items()}  # warm-up, and the same tokens
    same = outputs["engine"] == outputs["transformers"] == outputs["tinylm.generate"]
    times: dict[str, list[float]] = {name: [] for name in impls}
    for r in range(rounds):
        for name in list(impls) if r % 2 == 0 else list(impls)[::-1]:
            t = time.perf_counter()
            impls[name]()
            times[name].append(time.perf_counter() - t)
    engine.stop()
    rates = {name: new_tokens / statistics.median(ts) for name, ts in times.items()}
    for name, rate in rates.items():
        print(f"decode batch 1, {name}: {rate:,.0f} tokens/s", flush=True)
    ratio = rates["engine"] / rates["transformers"]
    print(f"decode batch 1: engine / transformers = {ratio:.2f}x (same greedy tokens: {same})")
    return {"tokens_per_s": rates, "engine_vs_transformers": ratio, "same_tokens": same}


# ---------------------------------------------------------------- HTTP clients


async def stream_one(http, body: dict) -> dict:
    """One streaming completion: tokens, time to first token, gaps between tokens (s)."""
    start = time.perf_counter()
    stamps, tokens = [], 0
    async with http.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["text"]:
                stamps.append(time.perf_counter())
    gaps = [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)]
    return {"tokens": tokens, "ttft": stamps[0] - start, "gaps": gaps}


async def clients(url: str, concurrency: int, requests_each: int, new_tokens: int) -> dict:
    import httpx2 as httpx

    async def client(c: int, http) -> list[dict]:
        out = []
        for i in range(requests_each):
            body = {
                "model": "seed-d128",
                "prompt": f"Request {c}.{i}: the history of",
                "max_tokens": new_tokens,
                "temperature": 0.8,
                "seed": 1000 * c + i,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            out.append(await stream_one(http, body))
        return out

    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        start = time.perf_counter()
        results = await asyncio.gather(*[client(c, http) for c in range(concurrency)])
        wall = time.perf_counter() - start
    requests = [r for rs in results for r in rs]
    assert all(r["tokens"] == new_tokens for r in requests), "a request ended early"
    return {
        "tokens_per_s": sum(r["tokens"] for r in requests) / wall,
        "ttft": [r["ttft"] for r in requests],
        "gaps": [g for r in requests for g in r["gaps"]],
    }


def serve_clients(
    run: Path, rounds: int, new_tokens: int, requests_each: int, precision: str
) -> dict:
    from tinylm.serve.app import ServeConfig
    from tinylm.serve.server import ServerThread, load_models

    models = load_models([f"seed-d128={run}"], "cpu", precision)
    out: dict[int, dict] = {}
    with ServerThread(models, ServeConfig(max_batch=16)) as url:
        asyncio.run(clients(url, 1, 1, 8))  # warm-up
        runs: dict[int, list[dict]] = {1: [], 8: []}
        for r in range(rounds):
            for c in (1, 8) if r % 2 == 0 else (8, 1):
                runs[c].append(asyncio.run(clients(url, c, requests_each, new_tokens)))
                print(f"clients {c}: {runs[c][-1]['tokens_per_s']:,.0f} tokens/s", flush=True)
    for c, rs in runs.items():
        ttft = sorted(t for r in rs for t in r["ttft"])
        gaps = sorted(g for r in rs for g in r["gaps"])
        out[c] = {
            "aggregate_tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
            "ttft_ms": {"p50": 1e3 * pct(ttft, 50), "p99": 1e3 * pct(ttft, 99)},
            "inter_token_ms": {"p50": 1e3 * pct(gaps, 50), "p99": 1e3 * pct(gaps, 99)},
            "requests": len(ttft),
        }
        o = out[c]
        print(
            f"{c} client(s): {o['aggregate_tokens_per_s']:,.0f} tokens/s aggregate | TTFT p50 "
            f"{o['ttft_ms']['p50']:.1f} ms p99 {o['ttft_ms']['p99']:.1f} ms | inter-token p50 "
            f"{o['inter_token_ms']['p50']:.2f} ms p99 {o['inter_token_ms']['p99']:.2f} ms"
        )
    ratio = out[8]["aggregate_tokens_per_s"] / out[1]["aggregate_tokens_per_s"]
    print(f"8 clients / 1 client aggregate tokens/s = {ratio:.2f}x")
    return {"precision": precision, "by_clients": out, "8_vs_1": ratio}


def pct(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of sorted values."""
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="decode,clients")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument(
        "--precision", default="fp32", help="the served weights' (clients section): fp32 or bf16"
    )
    parser.add_argument("--out", type=Path, default=HERE / "serve_results.json")
    args = parser.parse_args()
    import platform

    result = {
        "command": "PYTHONPATH=src flock /tmp/tinylm-heavy.lock python bench/serve_bench.py "
        + " ".join(sys.argv[1:]),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_avg_start": os.getloadavg(),
        "new_tokens": args.new_tokens,
        "prompt_tokens": PROMPT_TOKENS,
    }
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp))
        sections = args.sections.split(",")
        if "decode" in sections:
            result["decode"] = decode(run, args.rounds, args.new_tokens)
        if "clients" in sections:
            result["clients"] = serve_clients(
                run,
                max(1, args.rounds // 2),
                args.new_tokens,
                args.requests_per_client,
                args.precision,
            )
    result["load_avg_end"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
