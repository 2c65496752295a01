"""`tinylm serve RUN [RUN...]`: an OpenAI-compatible HTTP server and a web playground."""

from __future__ import annotations

import argparse

from tinylm.config import INFERENCE_PRECISIONS
from tinylm.errors import TinyLMError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve runs over an OpenAI-compatible HTTP API, with a web playground",
        description="Serve one or more runs over HTTP: /v1/completions, /v1/chat/completions "
        "(streaming, logprobs, seeds), /v1/models, /tokenize, /detokenize, /health, and a "
        "playground page at /. Concurrent requests are decoded together in batches. "
        "Needs the `serve` extra (pip install 'tinylm[serve]'); see docs/serve.md.",
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run (or checkpoint) directory, or NAME=RUN; clients pick one by its name in "
        "the `model` field (default name: the directory's)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument(
        "--precision",
        choices=INFERENCE_PRECISIONS,
        default="auto",
        help="weights' precision; auto: fp32 on a CPU, as for training on a GPU (default: auto)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 exposes "
        "the server to the network: set --api-key then)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--api-key",
        help="require 'Authorization: Bearer KEY' on API routes (default: none; also read "
        "from TINYLM_API_KEY)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=1_000_000,
        help="largest request body accepted (default: 1000000)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        help="most new tokens one choice may ask for (default: the model's context length)",
    )
    p.add_argument("--max-n", type=int, default=8, help="most choices in one request (default: 8)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=16,
        help="requests decoded together per model (default: 16)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="requests waiting for a slot before new ones get HTTP 429 (default: 64)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    try:
        from tinylm.serve.app import ServeConfig
        from tinylm.serve.server import check_listen, load_models, serve
    except ImportError as err:
        raise TinyLMError(
            f"tinylm serve needs {err.name}; install the extra: pip install 'tinylm[serve]'"
        ) from None
    config = ServeConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("TINYLM_API_KEY") or None,
        max_body_bytes=args.max_body_bytes,
        max_tokens=args.max_tokens,
        max_n=args.max_n,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
    )
    config.check()
    check_listen(config.host, config.port)
    models = load_models(args.runs, args.device, args.precision)
    names = ", ".join(f"{m.name} ({m.run.checkpoint.path}, {m.run.precision})" for m in models)
    print(f"serving {names}")
    print(f"playground: http://{args.host}:{args.port}/  API: http://{args.host}:{args.port}/v1")
    serve(models, config)
    return 0
