"""The HTTP API: OpenAI-compatible routes over the batched engine, and the playground.

    GET  /                      the playground (one static page)
    GET  /health                status, models, active and waiting requests
    GET  /v1/models             served models (id = the name given on the command line)
    POST /v1/completions        text or token-id prompts; stream, logprobs, echo, n, seed
    POST /v1/chat/completions   messages rendered with CHAT_TEMPLATE (base models)
    POST /tokenize, /detokenize text <-> token ids with a model's tokenizer

Every error is OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with the
HTTP status a client expects (400 bad input, 401 key, 404 model or route, 413 body too
large, 429 queue full, 500 only for a bug). Streams are server-sent events in OpenAI's
chunk format ending in `data: [DONE]`; their text is only ever whole characters and never
shows part of a stop string. A client that goes away cancels its requests at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tinylm.errors import TinyLMError
from tinylm.inference import InferenceRun, TextDecoder
from tinylm.serve.engine import Engine, Overloaded, SamplingParams, TokenEvent
from tinylm.serve.engine import Request as EngineRequest
from tinylm.serve.schemas import (
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    SamplingFields,
    TokenizeRequest,
)

STATIC = Path(__file__).parent / "static"
MAX_STOPS = 4
COMPLETION_DEFAULT_MAX_TOKENS = 16
"""/v1/completions without max_tokens, as OpenAI's API (chat fills the context instead)."""

CHAT_TEMPLATE = "{role}: {content}\n"
"""Each message as one 'Role: content' line; the prompt ends with 'Assistant:'. Roles are
System, User and Assistant (developer counts as System). The reply stops where the model
starts a new turn (CHAT_STOPS) or at end of text, and its leading spaces are dropped."""
CHAT_STOPS = ("\nUser:", "\nSystem:")


@dataclass
class ServeConfig:
    """Where the server listens and the limits it enforces."""

    host: str = "127.0.0.1"
    """Interface to bind; the default is reachable from this machine only."""
    port: int = 8000
    api_key: str | None = None
    """When set, every API route needs `Authorization: Bearer <key>` (not / and /health)."""
    max_body_bytes: int = 1_000_000
    """Largest request body accepted (HTTP 413 above it)."""
    max_tokens: int | None = None
    """Most new tokens one choice may ask for; None = the model's context length."""
    max_n: int = 8
    """Most choices one request may ask for (n times the number of prompts)."""
    max_batch: int = 16
    """Requests decoded together per model; more wait in the queue."""
    max_queue: int = 64
    """Requests waiting for a decoding slot; more are refused with HTTP 429."""

    def check(self) -> None:
        for limit in ("max_body_bytes", "max_n", "max_batch", "max_queue", "max_tokens"):
            value = getattr(self, limit)
            if value is not None and value <= 0:
                raise TinyLMError(f"{limit} (--{limit.replace('_', '-')}) must be positive")
        if not 0 <= self.port < 65536:
            raise TinyLMError("port (--port) must be between 0 and 65535")


@dataclass
class ServedModel:
    """A loaded run under the name clients ask for."""

    name: str
    run: InferenceRun
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def context(self) -> int:
        return self.run.block_size


class APIError(Exception):
    """An error the client caused (or a full queue): status + OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            param,
            code,
            type,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def create_app(models: list[ServedModel], config: ServeConfig, engine: Engine) -> FastAPI:
    """The app; the engine is started and stopped with it."""
    by_name = {m.name: m for m in models}

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="tinylm", lifespan=lifespan, docs_url="/docs", redoc_url=None)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        message = {404: f"no route {request.url.path}", 405: "method not allowed"}.get(
            err.status_code, str(err.detail)
        )
        return APIError(err.status_code, message, code=code).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> JSONResponse:
        return APIError(500, f"internal error: {err}", type="server_error").response()

    def authorize(request: Request) -> None:
        if not config.api_key:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
            raise APIError(
                401,
                "missing or wrong API key; send the header 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )

    def model_of(name: str) -> ServedModel:
        if name not in by_name:
            raise APIError(
                404,
                f"the model '{name}' does not exist; served: {', '.join(by_name)}",
                param="model",
                code="model_not_found",
            )
        return by_name[name]

    async def parse(request: Request, schema: type[BaseModel]) -> Any:
        authorize(request)
        body = await read_body(request, config.max_body_bytes)
        try:
            return schema.model_validate_json(body)
        except ValidationError as err:
            raise validation_error(err) from None

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC / "playground.html", media_type="text/html")

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = engine.error is None
        return JSONResponse(
            {"status": "ok" if ok else "error", "models": list(by_name), **engine.stats()},
            status_code=200 if ok else 503,
        )

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict:
        authorize(request)
        return {"object": "list", "data": [model_card(m) for m in models]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str, request: Request) -> dict:
        authorize(request)
        return model_card(model_of(name))

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict:
        body = await parse(request, TokenizeRequest)
        served = model_of(body.model)
        tokens = served.run.tokenizer.encode(body.prompt)
        return {"tokens": tokens, "count": len(tokens), "max_model_len": served.context}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict:
        body = await parse(request, DetokenizeRequest)
        served = model_of(body.model)
        check_ids(served, body.tokens, "tokens")
        return {"prompt": served.run.tokenizer.decode(body.tokens)}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body: CompletionRequest = await parse(request, CompletionRequest)
        served = model_of(body.model)
        if body.best_of not in (None, body.n):
            raise APIError(400, "best_of must equal n (or be left out)", param="best_of")
        prompts = completion_prompts(served, body.prompt)
        job = Job.build(
            engine,
            served,
            body,
            prompts,
            config,
            body.logprobs,
            kind="text_completion",
            echo=body.echo,
        )
        return await job.respond(request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body: ChatRequest = await parse(request, ChatRequest)
        served = model_of(body.model)
        if body.max_completion_tokens is not None:
            if body.max_tokens is not None:
                raise APIError(
                    400, "give max_tokens or max_completion_tokens, not both", param="max_tokens"
                )
            body.max_tokens = body.max_completion_tokens
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        prompt = served.run.tokenizer.encode(render_chat(body))
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        job = Job.build(engine, served, body, [prompt], config, logprobs, kind="chat.completion")
        return await job.respond(request)

    return app


# ------------------------------------------------------------------ request -> engine jobs


@dataclass
class Choice:
    """One choice's output as it streams: text in whole characters, stops cut off."""

    index: int
    prompt: list[int]
    decoder: TextDecoder
    stops: tuple[str, ...]
    request: EngineRequest | None = None
    sent: int = 0  # characters of decoder text already sent (or dropped)
    start: int = 0  # characters dropped at the start (chat: the reply's leading spaces)
    tokens: int = 0  # completion tokens generated
    finish: str | None = None
    strip: bool = False  # chat: drop leading spaces of the reply
    logprobs: list[tuple[int, float, list[tuple[int, float]], int]] = field(default_factory=list)
    """(token, logprob, top, text offset) of each token sent so far."""
    prompt_logprobs: list | None = None

    def add(self, event: TokenEvent) -> tuple[str, list]:
        """The text this event releases, and its tokens' logprob entries."""
        entries = []
        if event.prompt_logprobs is not None:
            self.prompt_logprobs = event.prompt_logprobs
        if event.token is not None:
            self.tokens += 1
            offset = len(self.decoder.shown)
            self.decoder.add([event.token])
            if event.logprob is not None:
                entries.append((event.token, event.logprob, event.top or [], offset))
        if event.finish is not None:
            self.decoder.flush()
        text = self.decoder.shown
        cut = self._stop_at(text)
        if cut is not None:
            text, self.finish = text[:cut], "stop"
            entries = [e for e in entries if e[3] < cut]
        elif event.finish is not None:
            self.finish = event.finish
        else:  # hold back a tail that may be the start of a stop string
            text = text[: len(text) - self._partial_stop(text)]
        new = text[self.sent :]
        if self.strip:
            stripped = new.lstrip(" ")
            self.start += len(new) - len(stripped)
            self.sent += len(new) - len(stripped)
            new = stripped
            self.strip = not new
        self.sent += len(new)
        self.logprobs += entries
        return new, entries

    def _stop_at(self, text: str) -> int | None:
        """Where the first complete stop string starts (searching unsent text), or None."""
        found = [i for s in self.stops if (i := text.find(s, self.sent)) >= 0]
        return min(found) if found else None

    def _partial_stop(self, text: str) -> int:
        """Length of the longest unsent tail of text that begins some stop string."""
        longest = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text) - self.sent), longest, -1):
                if text.endswith(s[:k]):
                    longest = k
                    break
        return longest


@dataclass
class Job:
    """One API request: its choices in the engine, and the response or stream built from them."""

    engine: Engine
    served: ServedModel
    body: SamplingFields
    kind: str  # "text_completion" or "chat.completion"
    choices: list[Choice]
    params: list[SamplingParams]
    echo: bool = False
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def build(
        cls,
        engine: Engine,
        served: ServedModel,
        body: SamplingFields,
        prompts: list[list[int]],
        config: ServeConfig,
        logprobs: int | None,
        kind: str,
        echo: bool = False,
    ) -> Job:
        """Check the request against the model and the caps; one Choice per (prompt, n)."""
        if body.presence_penalty or body.frequency_penalty:
            raise APIError(
                400, "presence_penalty and frequency_penalty are not supported (use 0)",
                param="presence_penalty" if body.presence_penalty else "frequency_penalty",
            )  # fmt: skip
        if len(prompts) * body.n > config.max_n:
            raise APIError(
                400,
                f"{len(prompts)} prompt(s) x n={body.n} choices exceeds the server's limit of "
                f"{config.max_n}",
                param="n",
            )
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > MAX_STOPS or not all(stops):
            raise APIError(400, f"stop takes at most {MAX_STOPS} non-empty strings", param="stop")
        chat = kind == "chat.completion"
        stops = tuple(stops) + (CHAT_STOPS if chat else ())
        context = served.context
        cap = min(config.max_tokens or context, context)
        longest = max(len(p) for p in prompts)
        if longest >= context:
            raise APIError(
                400,
                f"this model's maximum context length is {context} tokens; the prompt has "
                f"{longest}, leaving no room for new tokens",
                param="prompt" if not chat else "messages",
                code="context_length_exceeded",
            )
        max_tokens = body.max_tokens
        if max_tokens is None:
            default = cap if chat else COMPLETION_DEFAULT_MAX_TOKENS
            max_tokens = max(1, min(default, cap, context - longest))
        elif not 1 <= max_tokens <= cap:
            raise APIError(400, f"max_tokens must be between 1 and {cap}", param="max_tokens")
        elif longest + max_tokens > context:
            raise APIError(
                400,
                f"this model's maximum context length is {context} tokens; the prompt has "
                f"{longest} and max_tokens asks for {max_tokens} more; lower max_tokens to "
                f"{context - longest} or shorten the prompt",
                param="max_tokens",
                code="context_length_exceeded",
            )
        seed = body.seed if body.seed is not None else secrets.randbits(62)
        tokenizer = served.run.tokenizer
        stop_ids = frozenset(served.run.stop_tokens())
        choices, params = [], []
        for p, prompt in enumerate(prompts):
            for j in range(body.n):
                index = p * body.n + j
                choices.append(Choice(index, prompt, TextDecoder(tokenizer), stops, strip=chat))
                params.append(
                    SamplingParams(
                        max_tokens=max_tokens,
                        temperature=body.temperature,
                        top_p=body.top_p,
                        top_k=max(body.top_k, 0),
                        seed=(seed + index) % 2**63,
                        stop_ids=stop_ids,
                        logprobs=logprobs,
                        prompt_logprobs=echo and logprobs is not None,
                    )
                )
        return cls(engine, served, body, kind, choices, params, echo)

    async def respond(self, request: Request):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, TokenEvent]] = asyncio.Queue()
        for choice, params in zip(self.choices, self.params, strict=True):

            def emit(event: TokenEvent, i: int = choice.index) -> None:
                with contextlib.suppress(RuntimeError):  # a closed loop: shutting down
                    loop.call_soon_threadsafe(events.put_nowait, (i, event))

            choice.request = EngineRequest(self.served.name, choice.prompt, params, emit)
        try:
            self.engine.submit(*[c.request for c in self.choices])
        except Overloaded as err:
            raise APIError(
                429,
                f"server overloaded ({err}); retry shortly",
                code="overloaded",
                type="rate_limit_error",
                headers={"Retry-After": "1"},  # the openai client waits this long, then retries
            ) from None
        if self.body.stream:
            return StreamingResponse(
                self.stream(events),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        collect = asyncio.ensure_future(self.collect(events))
        gone = asyncio.ensure_future(wait_disconnect(request))
        try:
            await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not collect.done():
                collect.cancel()
                self.cancel()
        if not collect.done() or collect.cancelled():
            return JSONResponse({}, status_code=499)  # nobody is listening any more
        return collect.result()

    def cancel(self) -> None:
        for choice in self.choices:
            if choice.request is not None:
                choice.request.cancel()
        self.engine.wake()

    async def events(self, queue: asyncio.Queue) -> AsyncIterator[tuple[Choice, str, list]]:
        """(choice, new text, logprob entries) as tokens arrive, until every choice ends.
        Events that queued up meanwhile are merged per choice (fewer, larger chunks
        when the server is busy)."""
        open_ = len(self.choices)
        while open_:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            merged: dict[int, tuple[str, list]] = {}
            for i, event in batch:
                choice = self.choices[i]
                if choice.finish is not None:
                    continue  # a stop string already ended it; the engine's tail is ignored
                if event.finish is not None and event.finish.startswith("error"):
                    raise APIError(500, f"generation failed: {event.finish}", type="server_error")
                new, entries = choice.add(event)
                text, old = merged.get(i, ("", []))
                merged[i] = (text + new, old + entries)
                if choice.finish is not None:
                    open_ -= 1
                    if choice.request is not None and event.finish is None:
                        choice.request.cancel()  # a stop string: free the slot now
                        self.engine.wake()
            for i, (new, entries) in merged.items():
                yield self.choices[i], new, entries

    async def collect(self, queue: asyncio.Queue) -> dict:
        async for _ in self.events(queue):
            pass
        return self.response()

    async def stream(self, queue: asyncio.Queue) -> AsyncIterator[str]:
        chat = self.kind == "chat.completion"
        include_usage = bool(self.body.stream_options and self.body.stream_options.include_usage)
        try:
            for choice in self.choices:
                first = {"role": "assistant", "content": ""} if chat else None
                text = self.prompt_text(choice) if self.echo else ""
                logprobs = self.echo_logprobs(choice) if not chat else None
                if chat or text:
                    yield sse(self.chunk(choice, first if chat else text, logprobs, None))
            async for choice, new, entries in self.events(queue):
                if not new and not entries and choice.finish is None:
                    continue
                if chat:
                    delta = {"content": new} if new else {}
                    logprobs = self.chat_logprobs(entries) if self.wants_logprobs else None
                else:
                    delta = new
                    logprobs = self.text_logprobs(choice, entries) if self.wants_logprobs else None
                finish = map_finish(choice.finish)
                yield sse(self.chunk(choice, delta, logprobs, finish))
            if include_usage:
                yield sse(self.envelope([], usage=self.usage()))
        except APIError as err:
            yield sse(err.body())
        finally:
            self.cancel()  # a client that went away frees its slots here, at once
        yield "data: [DONE]\n\n"

    # -- response shapes ---------------------------------------------------------------

    @property
    def wants_logprobs(self) -> bool:
        return self.params[0].logprobs is not None

    def envelope(self, choices: list, usage: dict | None = None) -> dict:
        chat = self.kind == "chat.completion"
        out = {
            "id": ("chatcmpl-" if chat else "cmpl-") + self.id,
            "object": "chat.completion.chunk" if chat and self.body.stream else self.kind,
            "created": self.created,
            "model": self.served.name,
            "system_fingerprint": None,
            "choices": choices,
        }
        if usage is not None or not self.body.stream:
            out["usage"] = usage
        return out

    def chunk(self, choice: Choice, delta: Any, logprobs: Any, finish: str | None) -> dict:
        if self.kind == "chat.completion":
            body = {"index": choice.index, "delta": delta, "logprobs": logprobs}
        else:
            body = {"index": choice.index, "text": delta, "logprobs": logprobs}
        return self.envelope([{**body, "finish_reason": finish}])

    def response(self) -> dict:
        out = []
        for c in self.choices:
            text = c.decoder.shown[c.start : c.sent]
            finish = map_finish(c.finish)
            if self.kind == "chat.completion":
                logprobs = self.chat_logprobs(c.logprobs) if self.wants_logprobs else None
                message = {"role": "assistant", "content": text}
                out.append(
                    {"index": c.index, "message": message, "logprobs": logprobs,
                     "finish_reason": finish}
                )  # fmt: skip
            else:
                logprobs = None
                if self.wants_logprobs:
                    logprobs = self.text_logprobs(c, c.logprobs)
                    if self.echo:
                        logprobs = merge_logprobs(self.echo_logprobs(c), logprobs)
                prefix = self.prompt_text(c) if self.echo else ""
                out.append(
                    {"index": c.index, "text": prefix + text, "logprobs": logprobs,
                     "finish_reason": finish}
                )  # fmt: skip
        return self.envelope(out, usage=self.usage())

    def usage(self) -> dict:
        prompt = sum(len(self.choices[i].prompt) for i in range(0, len(self.choices), self.body.n))
        completion = sum(c.tokens for c in self.choices)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def prompt_text(self, choice: Choice) -> str:
        return self.served.run.tokenizer.decode(choice.prompt)

    def token_text(self, token: int) -> str:
        return self.served.run.tokenizer.decode([token])

    def text_logprobs(self, choice: Choice, entries: list) -> dict:
        """OpenAI's completions logprobs object for these tokens."""
        shift = len(self.prompt_text(choice)) if self.echo else 0
        return {
            "tokens": [self.token_text(t) for t, *_ in entries],
            "token_logprobs": [lp for _, lp, *_ in entries],
            "top_logprobs": [{self.token_text(i): v for i, v in top} for _, _, top, _ in entries],
            "text_offset": [shift + off for *_, off in entries],
        }

    def echo_logprobs(self, choice: Choice) -> dict | None:
        """The prompt's tokens in the logprobs object (the first has none), for echo."""
        if not (self.echo and self.wants_logprobs):
            return None
        tokens = [self.token_text(t) for t in choice.prompt]
        offsets, pos = [], 0
        for t in tokens:
            offsets.append(pos)
            pos += len(t)
        scored = choice.prompt_logprobs or []
        return {
            "tokens": tokens,
            "token_logprobs": [None] + [lp for lp, _ in scored],
            "top_logprobs": [None] + [{self.token_text(i): v for i, v in top} for _, top in scored],
            "text_offset": offsets,
        }

    def chat_logprobs(self, entries: list) -> dict:
        def item(token: int, lp: float) -> dict:
            text = self.token_text(token)
            return {"token": text, "logprob": lp, "bytes": list(text.encode())}

        return {
            "content": [
                {**item(t, lp), "top_logprobs": [item(i, v) for i, v in top]}
                for t, lp, top, _ in entries
            ]
        }


# ------------------------------------------------------------------ helpers


def model_card(m: ServedModel) -> dict:
    return {
        "id": m.name,
        "object": "model",
        "created": m.created,
        "owned_by": "tinylm",
        "max_model_len": m.context,
        "step": m.run.step,
        "precision": m.run.precision,
    }


def render_chat(body: ChatRequest) -> str:
    """CHAT_TEMPLATE: one 'Role: content' line per message, then 'Assistant:'."""
    lines = []
    for m in body.messages:
        content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
        role = "System" if m.role in ("system", "developer") else m.role.capitalize()
        lines.append(CHAT_TEMPLATE.format(role=role, content=content))
    return "".join(lines) + "Assistant:"


def completion_prompts(served: ServedModel, prompt: Any) -> list[list[int]]:
    """The request's prompt(s) as token ids; an empty text starts at a document boundary."""
    tokenizer = served.run.tokenizer
    if isinstance(prompt, str) or (prompt and all(isinstance(t, int) for t in prompt)):
        prompt = [prompt]  # one prompt
    if not prompt:
        raise APIError(400, "prompt must not be an empty list", param="prompt")
    out = []
    for p in prompt:
        if isinstance(p, str):
            out.append(tokenizer.encode(p) if p else [tokenizer.eot_id])
        else:
            if not p:
                raise APIError(400, "a token-id prompt must not be empty", param="prompt")
            check_ids(served, p, "prompt")
            out.append(list(p))
    return out


def check_ids(served: ServedModel, ids: list[int], param: str) -> None:
    vocab = served.run.tokenizer.vocab_size
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise APIError(
            400, f"token id {bad[0]} is out of range; this model's ids are 0..{vocab - 1}",
            param=param,
        )  # fmt: skip


def map_finish(finish: str | None) -> str | None:
    """The engine's 'cancelled' never reaches a client that is still listening."""
    return None if finish is None else ("length" if finish == "length" else "stop")


def merge_logprobs(head: dict | None, tail: dict) -> dict:
    if head is None:
        return tail
    return {k: head[k] + tail[k] for k in tail}


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) past `limit` bytes whether or not Content-Length says so."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> APIError:
    return APIError(
        413, f"request body is larger than the server's limit of {limit:,} bytes",
        code="request_too_large",
    )  # fmt: skip


def validation_error(err: ValidationError) -> APIError:
    """The first problem pydantic found, as one OpenAI-style 400."""
    e = err.errors(include_url=False)[0]
    if e["type"] == "json_invalid":
        return APIError(400, f"the body is not valid JSON ({e['msg']})", code="invalid_json")
    # Drop union-branch names pydantic puts in the location (e.g. 'list[int]', 'str').
    loc = [str(p) for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p == "str"))]
    param = ".".join(loc) or None
    if e["type"] == "extra_forbidden":
        return APIError(400, f"unrecognized request argument supplied: {param}", param=param)
    if e["type"] == "missing":
        return APIError(400, f"missing required parameter: {param}", param=param)
    if e["type"] == "model_type":
        # A nested object (e.g. messages.0) of the wrong type is not the body's fault.
        what = f"{param} must be a JSON object" if param else "the body must be a JSON object"
        return APIError(400, what, param=param, code="invalid_type")
    return APIError(400, f"invalid {param}: {e['msg']}", param=param, code="invalid_type")


async def wait_disconnect(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
