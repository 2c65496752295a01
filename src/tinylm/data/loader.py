"""Batches of token blocks from a split's flat token array.

Training (`BlockLoader`): the split is cut into non-overlapping blocks of block_size
tokens (the reference study's setup: 2,473,387 blocks of 128 tokens); each epoch visits
every block once in a seeded random order, the last batch of an epoch may be smaller
(as the study's 77,294 batches of 32 imply). The position (epoch, batch) is state a
checkpoint can save.

Evaluation (`eval_batches`): the same blocks in file order, optionally only the first N
batches, so repeated measurements use identical data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch


class BlockLoader:
    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int) -> None:
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.num_blocks = len(tokens) // block_size
        self.epoch = 0
        self.batch_in_epoch = 0
        self._order: np.ndarray | None = None

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.num_blocks / self.batch_size)

    def next_batch(self) -> torch.Tensor:
        """The next (B, block_size) int64 batch; moves to a new shuffled epoch when one ends."""
        if self.batch_in_epoch >= self.batches_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
            self._order = None
        if self._order is None:
            # One permutation per epoch, derived from (seed, epoch): resumable without saving it.
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(
                self.num_blocks
            )
        start = self.batch_in_epoch * self.batch_size
        self.batch_in_epoch += 1
        return gather_blocks(
            self.tokens, self._order[start : start + self.batch_size], self.block_size
        )

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        self.seed = state["seed"]
        self._order = None


def eval_batches(
    tokens: np.ndarray, block_size: int, batch_size: int, max_batches: int = 0
) -> Iterator[torch.Tensor]:
    """Blocks in file order; with max_batches=0 the whole split, its short tail included."""
    num_blocks = len(tokens) // block_size
    starts = np.arange(num_blocks)
    batches = 0
    for i in range(0, num_blocks, batch_size):
        if max_batches and batches >= max_batches:
            return
        yield gather_blocks(tokens, starts[i : i + batch_size], block_size)
        batches += 1
    tail = tokens[num_blocks * block_size :]
    if len(tail) >= 2 and not (max_batches and batches >= max_batches):
        yield torch.from_numpy(tail.astype(np.int64)).unsqueeze(0)  # (1, T_tail)


def gather_blocks(tokens: np.ndarray, block_ids: np.ndarray, block_size: int) -> torch.Tensor:
    """Blocks number block_ids of `tokens`, as a (len(block_ids), block_size) int64 tensor."""
    offsets = block_ids[:, None] * block_size + np.arange(block_size)[None, :]  # (B, T)
    return torch.from_numpy(tokens[offsets].astype(np.int64))
