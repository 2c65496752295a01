"""A bounded load test of `tinylm serve` on 127.0.0.1: many clients, a fixed request count.

    PYTHONPATH=src python bench/serve_load.py RUN [--clients 32] [--requests 640]

Serves RUN (in this process), then `--clients` concurrent clients send `--requests`
requests in all: completions and chat, streaming and not, varied lengths, seeds and
sampling settings, a few with logprobs, n=2 or stop strings. Passes (exit 0) when no
request failed, every answer was complete (a stream ends in [DONE]; usage adds up), the
server is healthy after with nothing left active, and its memory is flat: the resident
memory grows by less than --max-growth-mb from the end of the first half to the end.
Prints one JSON summary (also written to --out when given).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request_body(rng: random.Random, model: str, context: int, i: int) -> tuple[str, dict]:
    """A varied request: (path, body)."""
    max_tokens = rng.randint(1, min(48, context // 2))
    body: dict = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": rng.choice([0.0, 0.7, 1.0]),
        "seed": i,
        "stream": rng.random() < 0.5,
    }
    if rng.random() < 0.3:
        body["top_p"] = 0.9
    if rng.random() < 0.2:
        body["stop"] = ["\n", "."]
    if rng.random() < 0.3:
        path = "/v1/chat/completions"
        body["messages"] = [{"role": "user", "content": f"Tell me about topic {i}."}]
    else:
        path = "/v1/completions"
        body["prompt"] = f"Item {i}: the history of"
        if rng.random() < 0.15:
            body["logprobs"] = 2
        if rng.random() < 0.1:
            body["n"] = 2
    if body["stream"]:
        body["stream_options"] = {"include_usage": True}
    return path, body


async def one(http, path: str, body: dict) -> str | None:
    """None when the request succeeded completely, else what went wrong."""
    if not body["stream"]:
        r = await http.post(path, json=body)
        if r.status_code != 200:
            return f"{r.status_code}: {r.text[:200]}"
        out = r.json()
        if len(out["choices"]) != body.get("n", 1) or out["usage"]["completion_tokens"] < 0:
            return f"incomplete answer: {r.text[:200]}"
        return None
    lines = []
    async with http.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            return f"{r.status_code}: {(await r.aread())[:200]!r}"
        async for line in r.aiter_lines():
            if line:
                lines.append(line)
    if not lines or lines[-1] != "data: [DONE]":
        return f"stream did not end in [DONE]: {lines[-1:]}"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    if any("error" in c for c in chunks) or not chunks[-1].get("usage"):
        return f"stream error or no usage: {lines[-2][:200]}"
    return None


async def load(url: str, model: str, context: int, clients: int, requests: int) -> dict:
    import httpx2 as httpx

    rng = random.Random(0)
    todo = [request_body(rng, model, context, i) for i in range(requests)]
    failures: list[str] = []
    rss: dict[str, float] = {"start": rss_mb()}
    done = 0

    async def client(http) -> None:
        nonlocal done
        while todo:
            path, body = todo.pop()
            try:
                error = await one(http, path, body)
            except Exception as err:  # noqa: BLE001 -- a failed request is what we count
                error = f"{type(err).__name__}: {err}"
            if error:
                failures.append(error)
            done += 1
            if done == requests // 2:
                rss["half"] = rss_mb()

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(clients)])
        wall = time.perf_counter() - start
        health = (await http.get("/health")).json()
    rss["end"] = rss_mb()
    return {
        "clients": clients,
        "requests": requests,
        "failed": len(failures),
        "failures": failures[:5],
        "seconds": round(wall, 2),
        "requests_per_s": round(requests / wall, 1),
        "health_after": health,
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "rss_growth_second_half_mb": round(rss["end"] - rss["half"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run (or checkpoint) directory to serve")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--max-growth-mb", type=float, default=25.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from tinylm.serve.app import ServeConfig
    from tinylm.serve.server import ServerThread, load_models

    models = load_models([f"m={args.run}"], "cpu", "fp32")
    # Queue room for every client (n=2 takes two places): no 429 is expected here.
    config = ServeConfig(max_batch=16, max_queue=2 * args.clients)
    with ServerThread(models, config) as url:
        result = asyncio.run(load(url, "m", models[0].context, args.clients, args.requests))
    health = result["health_after"]
    result["passed"] = (
        result["failed"] == 0
        and health["status"] == "ok"
        and health["active"] == health["waiting"] == 0
        and result["rss_growth_second_half_mb"] < args.max_growth_mb
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
