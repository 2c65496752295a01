"""Batched decoding for the server: many requests share each decode step.

    submit(prompt, params) ─► waiting queue (bounded: Overloaded when full)
        ─► worker thread: a free slot? prefill the prompt alone into that slot's KV cache,
           sample its first token
        ─► decode step: one forward of every active slot's newest token, each at its own
           position, (B, 1) -> logits (B, V); each slot samples with its own settings and
           its own torch.Generator
        ─► a slot that stops (stop token, max_tokens, cancelled) leaves at once; the last
           slot moves into its place, so active slots are always rows 0..B-1 of the cache

All model work runs on one worker thread (never the event loop). Each request receives
its tokens as `TokenEvent`s through a callback the caller makes thread-safe (the server
hands them to its asyncio loop). A request's output with a seed does not depend on what
else is in the batch: its generator draws only for it, and rows never attend to each
other's keys.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from tinylm.generate import draw, next_token_probs, uniform
from tinylm.model import GPT, LayerCache, softcap


@dataclass
class EngineConfig:
    """Capacity of the decoding engine."""

    max_batch: int = 16
    """Slots per model: requests decoded together in one step; more wait in the queue."""
    max_queue: int = 64
    """Requests waiting for a slot (all models together); one more is refused (HTTP 429)."""


@dataclass
class SamplingParams:
    """How one request continues its prompt (already checked by the API layer)."""

    max_tokens: int
    temperature: float = 1.0
    """0 = greedy."""
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop_ids: frozenset[int] = frozenset()
    """Token ids that end the request (not part of its output), e.g. end of text."""
    logprobs: int | None = None
    """None: no log-probabilities; N >= 0: the chosen token's and the N likeliest."""
    prompt_logprobs: bool = False
    """Also the log-probability of each prompt token after the first (for echo)."""


@dataclass
class TokenEvent:
    """One generated token, or the end of a request (token None, finish set)."""

    token: int | None
    logprob: float | None = None
    """log p(token) under the model (temperature 1, before top-k/top-p)."""
    top: list[tuple[int, float]] | None = None
    """The likeliest tokens and their log-probabilities, best first."""
    finish: str | None = None
    """'stop' (a stop token), 'length' (max_tokens), 'cancelled' or 'error: ...'."""
    prompt_logprobs: list[tuple[float, list[tuple[int, float]]]] | None = None
    """With the first event when asked: (logprob, top) of each prompt token after the first."""


class Overloaded(Exception):
    """The waiting queue is full."""


class Request:
    """One generation in the engine. `cancel` may be called from any thread."""

    _ids = itertools.count()

    def __init__(
        self,
        model: str,
        prompt: Sequence[int],
        params: SamplingParams,
        emit: Callable[[TokenEvent], None],
    ) -> None:
        self.id = next(self._ids)
        self.model = model
        self.prompt = list(prompt)
        self.params = params
        self.emit = emit
        self.cancelled = False
        self.finished = False  # the engine is done with it (its last event is sent)
        self.generated = 0
        self.generator: torch.Generator | None = None  # made on the model's device
        self.submitted = time.perf_counter()

    def cancel(self) -> None:
        self.cancelled = True


class Engine:
    """One worker thread decoding for every served model."""

    def __init__(self, models: dict[str, GPT], config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.batches = {name: SlotBatch(m, self.config.max_batch) for name, m in models.items()}
        self._waiting: deque[Request] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0  # decode steps run (all models)
        self.cancelled = 0  # requests ended early by the caller (client gone, stop string)
        self.error: BaseException | None = None

    # -- the caller's side (any thread) --------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="tinylm-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def submit(self, *requests: Request) -> None:
        """Queue requests (all or none); Overloaded when max_queue would be exceeded."""
        for request in requests:
            if request.model not in self.batches:
                raise KeyError(request.model)
        with self._wake:
            if len(self._waiting) + len(requests) > self.config.max_queue:
                raise Overloaded(f"{len(self._waiting)} requests are waiting for a slot")
            self._waiting.extend(requests)
            self._wake.notify()

    def wake(self) -> None:
        """Let the worker see a cancellation now, even while it waits for work."""
        with self._wake:
            self._wake.notify()

    def stats(self) -> dict[str, int]:
        return {
            "active": sum(len(b.rows) for b in self.batches.values()),
            "waiting": len(self._waiting),
            "steps": self.steps,
            "cancelled": self.cancelled,
        }

    # -- the worker thread ---------------------------------------------------------------

    def _work(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self._wake:
                        while not self._stopping and not self._has_work():
                            self._wake.wait()
                        if self._stopping:
                            break
                        admitted = self._admit()
                    for batch, request in admitted:
                        batch.join(request)
                    for batch in self.batches.values():
                        self.cancelled += batch.drop_cancelled()
                        if batch.rows:
                            batch.step()
                            self.steps += 1
        except BaseException as err:  # a bug or out of memory: fail every request, loudly
            self.error = err
            for batch in self.batches.values():
                for request in batch.rows:
                    request.emit(TokenEvent(None, finish=f"error: {err}"))
            with self._wake:
                for request in self._waiting:
                    request.emit(TokenEvent(None, finish=f"error: {err}"))
                self._waiting.clear()
            raise
        finally:
            for batch in self.batches.values():
                for request in batch.rows:
                    request.emit(TokenEvent(None, finish="cancelled"))
                batch.rows.clear()

    def _has_work(self) -> bool:
        return bool(self._waiting) or any(b.rows for b in self.batches.values())

    def _admit(self) -> list[tuple[SlotBatch, Request]]:
        """Waiting requests that get a free slot now, in arrival order per model."""
        admitted, kept = [], deque()
        free = {name: b.max_batch - len(b.rows) for name, b in self.batches.items()}
        for request in self._waiting:
            if request.cancelled:
                self.cancelled += 1
                request.emit(TokenEvent(None, finish="cancelled"))
            elif free[request.model] > 0:
                free[request.model] -= 1
                admitted.append((self.batches[request.model], request))
            else:
                kept.append(request)
        self._waiting = kept
        return admitted


class SlotBatch:
    """One model's KV cache of max_batch slots and the requests occupying rows 0..B-1."""

    def __init__(self, model: GPT, max_batch: int) -> None:
        cfg = model.config
        weight = model.lm_head.weight
        shape = (max_batch, cfg.kv_heads, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.model = model
        self.max_batch = max_batch
        self.device = weight.device
        self.k = [torch.zeros(shape, dtype=weight.dtype, device=self.device) for _ in model.blocks]
        self.v = [torch.zeros(shape, dtype=weight.dtype, device=self.device) for _ in model.blocks]
        # The output layer's weight transposed once, (C, V): at batch 1, hidden @ head is
        # ~3x faster than nn.Linear's (V, C) layout on this 2-core CPU (bench/serve_bench.py).
        self.head = weight.detach().t().contiguous()
        self.rows: list[Request] = []
        self.lengths: list[int] = []  # tokens cached in each row
        self.pending: list[int] = []  # each row's newest token, sampled but not yet cached

    def join(self, request: Request) -> None:
        """Prefill the request's prompt into the next free row and sample its first token."""
        row = len(self.rows)
        params = request.params
        request.generator = torch.Generator(device=self.device).manual_seed(params.seed)
        prompt = torch.tensor([request.prompt], dtype=torch.long, device=self.device)  # (1, T)
        T = prompt.shape[1]
        cache = _PrefillCache(self, row)
        hidden = self.model(prompt, cache=cache, return_hidden=True)  # (1, T, C)
        if params.prompt_logprobs:
            logits = self._logits(hidden[0])  # (T, V)
            prompt_lp = _prompt_logprobs(logits, request.prompt, params.logprobs or 0)
        else:
            logits, prompt_lp = self._logits(hidden[0, -1:]), None  # (1, V)
        self.rows.append(request)
        self.lengths.append(T)
        self.pending.append(0)
        self._emit(row, self._choose([row], logits[-1:])[0], logits[-1], prompt_lp)

    def step(self) -> None:
        """One decode step: every row's pending token goes through the model together."""
        B = len(self.rows)
        idx = torch.tensor(self.pending, dtype=torch.long, device=self.device)[:, None]  # (B,1)
        cache = _DecodeCache(self, self.lengths)
        logits = self._logits(self.model(idx, cache=cache, return_hidden=True)[:, -1, :])  # (B,V)
        for row in range(B):
            self.lengths[row] += 1
        for row, token in enumerate(self._choose(list(range(B)), logits)):
            self._emit(row, token, logits[row])
        self._drop(lambda r: r.finished)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's output layer on final hidden states (N, C) -> (N, V)."""
        return softcap(hidden @ self.head, self.model.config.logit_softcap)

    def drop_cancelled(self) -> int:
        """Free the rows of cancelled requests; how many there were."""
        count = 0
        for request in self.rows:
            if request.cancelled and not request.finished:
                request.finished = True
                request.emit(TokenEvent(None, finish="cancelled"))
                count += 1
        self._drop(lambda r: r.finished)
        return count

    def _choose(self, rows: list[int], logits: torch.Tensor) -> list[int]:
        """Next token of each row from its logits (len(rows), V). Rows that sample alike
        share one batched computation; each draws with its own generator."""
        groups: dict[tuple[float, int, float], list[int]] = {}
        for i, row in enumerate(rows):
            p = self.rows[row].params
            key = (0.0, 0, 1.0) if p.temperature <= 0 else (p.temperature, p.top_k, p.top_p)
            groups.setdefault(key, []).append(i)
        tokens = [0] * len(rows)
        with _one_thread():
            for key, members in groups.items():
                self._choose_group(rows, logits, key, members, tokens)
        return tokens

    def _choose_group(
        self,
        rows: list[int],
        logits: torch.Tensor,
        key: tuple[float, int, float],
        members: list[int],
        tokens: list[int],
    ) -> None:
        """Sample the rows `members` (indices into rows) that share these settings."""
        temperature, top_k, top_p = key
        sub = logits if len(members) == len(rows) else logits[members]  # (G, V)
        if temperature <= 0:
            chosen = sub.argmax(dim=-1)  # (G,)
        else:
            probs = next_token_probs(sub, temperature, top_k, top_p)  # (G, V)
            u = torch.cat(
                [uniform(1, self.rows[rows[i]].generator, self.device) for i in members]
            )  # (G, 1): each row's own random stream
            chosen = draw(probs, u)[:, 0]
        for i, token in zip(members, chosen.tolist(), strict=True):
            tokens[i] = token

    def _emit(
        self,
        row: int,
        token: int,
        logits: torch.Tensor,
        prompt_lp: list[tuple[float, list[tuple[int, float]]]] | None = None,
    ) -> None:
        """Send row's new token (logits (V,) give its logprobs), or the request's end."""
        request = self.rows[row]
        p = request.params
        logprob, top = None, None
        if p.logprobs is not None:
            lp = logits.float().log_softmax(dim=-1)  # (V,)
            logprob = float(lp[token])
            top = _top(lp, p.logprobs)
        request.generated += 1
        if token in p.stop_ids:
            request.finished = True
            request.emit(TokenEvent(None, finish="stop", prompt_logprobs=prompt_lp))
            return
        request.emit(TokenEvent(token, logprob, top, prompt_logprobs=prompt_lp))
        if request.generated >= p.max_tokens:
            request.finished = True
            request.emit(TokenEvent(None, finish="length"))
            return
        self.pending[row] = token

    def _drop(self, gone: Callable[[Request], bool]) -> None:
        """Remove finished rows; the last row moves into each freed one (rows stay 0..B-1)."""
        row = 0
        while row < len(self.rows):
            if not gone(self.rows[row]):
                row += 1
                continue
            last = len(self.rows) - 1
            if row != last:
                n = self.lengths[last]
                for k, v in zip(self.k, self.v, strict=True):
                    k[row, :, :n] = k[last, :, :n]
                    v[row, :, :n] = v[last, :, :n]
                self.rows[row] = self.rows[last]
                self.lengths[row] = self.lengths[last]
                self.pending[row] = self.pending[last]
            self.rows.pop()
            self.lengths.pop()
            self.pending.pop()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the sampling ops on one thread: over (B, 50k) rows their parallel regions cost
    more than they save on 2 cores (a batch of 8 samples ~1.5x faster; bench/serve_bench.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _top(lp: torch.Tensor, n: int) -> list[tuple[int, float]]:
    """The n likeliest tokens of log-probabilities lp (V,), best first."""
    if n <= 0:
        return []
    values, ids = lp.topk(min(n, lp.shape[-1]))
    return list(zip(ids.tolist(), values.tolist(), strict=True))


def _prompt_logprobs(
    logits: torch.Tensor, prompt: Sequence[int], n: int
) -> list[tuple[float, list[tuple[int, float]]]]:
    """(log p(prompt[t] | prompt[:t]), top n) for t = 1..T-1, from logits (T, V)."""
    lp = logits[:-1].float().log_softmax(dim=-1)  # (T-1, V): position t predicts t+1
    out = []
    for t, token in enumerate(prompt[1:]):
        out.append((float(lp[t, token]), _top(lp[t], n)))
    return out


# -- the cache protocol GPT.forward speaks (length, positions, attention_mask, layer) -----


class _PrefillCache:
    """A fresh prompt of T tokens into one row of a SlotBatch's cache, from position 0."""

    def __init__(self, batch: SlotBatch, row: int) -> None:
        self.batch, self.row, self.length = batch, row, 0

    def positions(self, T: int) -> torch.Tensor:
        return torch.arange(T, device=self.batch.device)  # (T,)

    def attention_mask(self, T: int) -> torch.Tensor | None:
        if T == 1:
            return None
        return torch.ones(T, T, dtype=torch.bool, device=self.batch.device).tril()[None, None]

    def layer(self, i: int) -> LayerCache:
        r = self.row
        return LayerCache(self, self.batch.k[i][r : r + 1], self.batch.v[i][r : r + 1])


class _DecodeCache:
    """One new token per row, each row at its own length: rows 0..B-1 of a SlotBatch."""

    def __init__(self, batch: SlotBatch, lengths: list[int]) -> None:
        self.batch = batch
        self.B = len(lengths)
        self.start = min(lengths)
        self.keys = max(lengths) + 1  # S: keys the longest row attends to
        self.uniform = self.start == max(lengths)
        device = batch.device
        self.pos = torch.tensor(lengths, dtype=torch.long, device=device)  # (B,)
        self.rows = torch.arange(self.B, device=device)  # (B,)

    @property
    def length(self) -> int:
        """The longest row's length (GPT.forward checks it against block_size)."""
        return self.keys - 1

    @length.setter
    def length(self, value: int) -> None:
        pass  # GPT.forward advances the length; the SlotBatch advances each row itself

    def positions(self, T: int) -> torch.Tensor:
        return self.pos[:, None]  # (B, 1)

    def attention_mask(self, T: int) -> torch.Tensor | None:
        if self.uniform:
            return None  # every row sees all of its keys
        k_pos = torch.arange(self.keys, device=self.batch.device)  # (S,)
        return (k_pos[None, :] <= self.pos[:, None])[:, None, None, :]  # (B, 1, 1, S)

    def layer(self, i: int) -> _DecodeLayer:
        return _DecodeLayer(self, self.batch.k[i], self.batch.v[i])


@dataclass
class _DecodeLayer:
    cache: _DecodeCache
    k: torch.Tensor  # (max_batch, n_kv_head, block_size, hs)
    v: torch.Tensor

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nkv, 1, hs) at each row's own position; return (B, nkv, S, hs)."""
        c = self.cache
        if c.uniform:
            self.k[: c.B, :, c.start : c.start + 1] = k
            self.v[: c.B, :, c.start : c.start + 1] = v
        else:
            self.k[c.rows, :, c.pos] = k[:, :, 0]  # (B, nkv, hs) scattered
            self.v[c.rows, :, c.pos] = v[:, :, 0]
        return self.k[: c.B, :, : c.keys], self.v[: c.B, :, : c.keys]
