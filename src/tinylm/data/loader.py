"""Batches of token blocks from a split's flat token array.

Training (`BlockLoader`), two sampling modes:
  blocks  the split is cut into non-overlapping blocks of block_size tokens (the reference
          study's setup: 2,473,387 blocks of 128 tokens); each epoch visits every block once
          in a seeded random order; the last batch of an epoch may be smaller (as the
          study's 77,294 batches of 32 imply).
  random  each epoch draws as many windows as there are blocks, at seeded random offsets
          (windows may overlap and cross document ends).
With world_size N, rank r takes every N-th entry of the epoch's order: the ranks' parts are
disjoint, equally long (the last num_blocks % N entries of an epoch are left out), and
together cover the epoch. Batch b of every rank together is entries [b*B*N, (b+1)*B*N) of
the order, so a step reads the same sequences with any N at the same global batch. The
position (epoch, batch) plus everything that fixes the order is the state a checkpoint
saves; it resumes with another world size or batch split (see load_state_dict).

Evaluation (`eval_batches`): the same blocks in file order, optionally only the first N
batches, so repeated measurements use identical data.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

SAMPLING = ("blocks", "random")


class BlockLoader:
    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        sampling: str = "blocks",
    ) -> None:
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.sampling = sampling
        self.num_blocks = len(tokens) // block_size
        self.epoch = 0
        self.batch_in_epoch = 0
        self._order: np.ndarray | None = None  # the order of epoch _order_epoch
        self._order_epoch = -1
        self._lock = threading.Lock()  # a Prefetcher reads batches from its own thread

    @property
    def blocks_per_rank(self) -> int:
        """Entries of each epoch this rank reads (all num_blocks when world_size is 1)."""
        return self.num_blocks // self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.blocks_per_rank / self.batch_size)

    def epoch_starts(self, epoch: int) -> np.ndarray:
        """Token offsets of this rank's windows in `epoch`, in reading order."""
        rng = np.random.default_rng([self.seed, epoch])  # the same on every rank
        if self.sampling == "blocks":
            starts = rng.permutation(self.num_blocks) * self.block_size
        else:
            high = len(self.tokens) - self.block_size + 1
            starts = rng.integers(0, high, size=self.num_blocks)
        return starts[self.rank : self.blocks_per_rank * self.world_size : self.world_size]

    def next_batch(self) -> torch.Tensor:
        """The next (B, block_size) int64 batch; moves to a new shuffled epoch when one ends."""
        epoch, index = self.position()
        batch = self.batch_at(epoch, index)
        self.epoch, self.batch_in_epoch = epoch, index + 1
        return batch

    def position(self) -> tuple[int, int]:
        """(epoch, batch index) of the batch next_batch() returns next."""
        if self.batch_in_epoch >= self.batches_per_epoch:
            return self.epoch + 1, 0
        return self.epoch, self.batch_in_epoch

    def batch_at(self, epoch: int, index: int) -> torch.Tensor:
        """Batch `index` of `epoch` (a pure function of the position; thread-safe)."""
        with self._lock:
            if self._order is None or self._order_epoch != epoch:
                # Derived from (seed, epoch): resumable without saving the permutation.
                self._order, self._order_epoch = self.epoch_starts(epoch), epoch
            order = self._order
        start = index * self.batch_size
        return gather_windows(self.tokens, order[start : start + self.batch_size], self.block_size)

    def state_dict(self) -> dict[str, Any]:
        """Everything that fixes the stream from here on (JSON-serialisable)."""
        return {
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "seed": self.seed,
            "sampling": self.sampling,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "num_blocks": self.num_blocks,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where `state` was saved; a different data or block shape is refused.

        The position is kept as sequences of the epoch's order read by all ranks together,
        so a state saved with one world size or micro-batch resumes with another (at a
        multiple of this loader's world_size * batch_size, as saves at step ends are).
        """
        from tinylm.errors import TinyLMError

        for key in ("block_size", "num_blocks", "sampling"):
            if key in state and state[key] != getattr(self, key):
                raise TinyLMError(
                    f"cannot resume the data position: the checkpoint's {key} is {state[key]}, "
                    f"this run's is {getattr(self, key)}; resume with the same data and settings"
                )
        saved_world, saved_batch = state.get("world_size", 1), state["batch_size"]
        saved_batches = math.ceil(self.num_blocks // saved_world / saved_batch)
        epoch, batch = state["epoch"], state["batch_in_epoch"]
        if batch >= saved_batches:  # the saved epoch was read to its end
            epoch, batch = epoch + 1, 0
        sequences = batch * saved_batch * saved_world
        per_batch = self.batch_size * self.world_size
        if sequences % per_batch:
            raise TinyLMError(
                f"cannot resume the data position: {sequences} sequences into epoch {epoch} is "
                f"not a whole number of this run's micro-steps of {per_batch} sequences; "
                "resume with the train.batch_size / train.micro_batch_size it was saved with"
            )
        self.epoch, self.batch_in_epoch = epoch, sequences // per_batch
        self.seed = state["seed"]
        self._order = None


class Prefetcher:
    """A BlockLoader's batches on `device`, each read one batch ahead in a background
    thread (pinned and copied without blocking on CUDA), so a step never waits for its data.

    The loader's position (what a checkpoint saves) moves only when a batch is taken: a
    batch read ahead for a position the loader has left (a resume moved it) is dropped.
    """

    def __init__(self, loader: BlockLoader, device: torch.device) -> None:
        self.loader, self.device = loader, device
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tinylm-prefetch")
        self._ahead: tuple[tuple[int, int], Future[torch.Tensor]] | None = None

    def next_batch(self) -> torch.Tensor:
        """The loader's next (B, T) batch, on the device."""
        loader = self.loader
        position = loader.position()
        if self._ahead is not None and self._ahead[0] == position:
            batch = self._ahead[1].result()
        else:
            batch = self._load(position)
        loader.epoch, loader.batch_in_epoch = position[0], position[1] + 1
        following = loader.position()
        self._ahead = following, self._pool.submit(self._load, following)
        return batch

    def _load(self, position: tuple[int, int]) -> torch.Tensor:
        batch = self.loader.batch_at(*position)
        if self.device.type != "cuda":
            return batch
        return batch.pin_memory().to(self.device, non_blocking=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._ahead = None


def prefetched(batches: Iterator[torch.Tensor], device: torch.device) -> Iterator[torch.Tensor]:
    """`batches` on `device`, each read (and on CUDA pinned and copied) one ahead in a
    background thread."""

    def load(it: Iterator[torch.Tensor]) -> torch.Tensor | None:
        batch = next(it, None)
        if batch is None or device.type != "cuda":
            return batch
        return batch.pin_memory().to(device, non_blocking=True)

    with ThreadPoolExecutor(1, thread_name_prefix="tinylm-prefetch") as pool:
        ahead = pool.submit(load, batches)
        while (batch := ahead.result()) is not None:
            ahead = pool.submit(load, batches)
            yield batch


def eval_batches(
    tokens: np.ndarray, block_size: int, batch_size: int, max_batches: int = 0
) -> Iterator[torch.Tensor]:
    """Blocks in file order; with max_batches=0 the whole split, its short tail included."""
    num_blocks = len(tokens) // block_size
    starts = np.arange(num_blocks) * block_size
    batches = 0
    for i in range(0, num_blocks, batch_size):
        if max_batches and batches >= max_batches:
            return
        yield gather_windows(tokens, starts[i : i + batch_size], block_size)
        batches += 1
    tail = tokens[num_blocks * block_size :]
    if len(tail) >= 2 and not (max_batches and batches >= max_batches):
        yield torch.from_numpy(np.asarray(tail).astype(np.int64)).unsqueeze(0)  # (1, T_tail)


def eval_prefix(tokens: np.ndarray, block_size: int, batch_size: int, max_batches: int
                ) -> np.ndarray:  # fmt: skip
    """The tokens eval_batches(tokens, block_size, batch_size, max_batches) reads, as a
    prefix that eval_batches(..., max_batches=0) reads whole with any batch size: the
    first max_batches * batch_size blocks, and the tail only if fewer batches came before it."""
    num_blocks = len(tokens) // block_size
    if not max_batches or math.ceil(num_blocks / batch_size) < max_batches:
        return tokens
    return tokens[: min(num_blocks, max_batches * batch_size) * block_size]


def gather_windows(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> torch.Tensor:
    """Windows tokens[s : s + block_size] for each s in starts, as a (B, block_size) int64."""
    offsets = starts[:, None] + np.arange(block_size)[None, :]  # (B, T)
    return torch.from_numpy(tokens[offsets].astype(np.int64))
