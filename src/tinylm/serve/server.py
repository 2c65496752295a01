"""Running the app: load the runs, start the engine, listen with uvicorn.

`serve` blocks (the `tinylm serve` command); `ServerThread` runs the same server in a
background thread on a free port of 127.0.0.1, for tests and benchmarks.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from tinylm.errors import TinyLMError
from tinylm.inference import load_for_inference
from tinylm.serve.app import ServeConfig, ServedModel, create_app
from tinylm.serve.engine import Engine, EngineConfig


def load_models(
    specs: list[str], device: str = "auto", precision: str = "auto"
) -> list[ServedModel]:
    """RUN or NAME=RUN for each model; the name is what clients put in `model`
    (default: the run directory's name)."""
    models: dict[str, ServedModel] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).resolve().name, spec
        if not name:
            raise TinyLMError(f"{spec!r}: empty model name; use NAME=RUN")
        if name in models:
            raise TinyLMError(f"two models are named {name!r}; name them apart with NAME=RUN")
        run = load_for_inference(path, device, precision)
        run.tokenizer  # noqa: B018 -- read now: a missing dataset is an error at startup
        models[name] = ServedModel(name, run)
    return list(models.values())


def check_listen(host: str, port: int) -> None:
    """Refuse, in one line, an address the server could not listen on (port in use,
    unknown host), before any run is loaded."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as err:
        raise TinyLMError(
            f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port "
            "or --host, or stop what uses it"
        ) from None


def build(models: list[ServedModel], config: ServeConfig):
    """(app, engine) for these models under these limits."""
    config.check()
    engine = Engine(
        {m.name: m.run.model for m in models}, EngineConfig(config.max_batch, config.max_queue)
    )
    return create_app(models, config, engine), engine


def serve(models: list[ServedModel], config: ServeConfig) -> None:
    """Listen until interrupted (Ctrl-C ends open streams within 2 s)."""
    app, _ = build(models, config)
    server = uvicorn.Server(_uvicorn_config(app, config.host, config.port, "info"))
    server.run()


class ServerThread:
    """The server on 127.0.0.1 in a background thread: `with ServerThread(...) as url:`."""

    def __init__(self, models: list[ServedModel], config: ServeConfig | None = None) -> None:
        config = config or ServeConfig()
        config.port = 0  # a free port, chosen by the OS
        self.app, self.engine = build(models, config)
        self.server = uvicorn.Server(_uvicorn_config(self.app, config.host, 0, "warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _uvicorn_config(app, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=2,
        access_log=log_level == "info",
    )
