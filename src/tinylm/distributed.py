"""Everything distributed, in one place: torchrun's environment, the process group, wrapping
the model (DDP or FSDP2), collectives the trainer needs, and full checkpoints.

    torchrun --nproc_per_node N -m tinylm train CONFIG --out RUN

torchrun starts N processes and gives each RANK, LOCAL_RANK and WORLD_SIZE (and the
rendezvous address) in its environment. Without them nothing here does anything: a
plain `tinylm train` is one process with no process group, and every helper below is a
no-op or the identity.

    one rank's step:  micro-batch (micro_batch, T) ─► forward ─► loss / accum ─► backward
                      (gradient sync on the last micro-batch only: DDP all-reduce or
                      FSDP2 reduce-scatter, both averaging over ranks)
                      ─► clip by the global norm ─► AdamW on this rank's (shard of the)
                      parameters

The model file knows nothing of this; `wrap` is the only place a model is wrapped.
Checkpoints stay the single-process format: the full state is gathered to rank 0, which
writes it, and every rank reads it back on resume, so a run saved with N ranks resumes
with M (and eval, generate and export read it as any other checkpoint).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from tinylm.errors import TinyLMError

PARALLEL = ("ddp", "fsdp")


# --- the environment torchrun sets, and the process group -----------------------------


@dataclass(frozen=True)
class Env:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or "RANK" in os.environ

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env() -> Env:
    """Read RANK / LOCAL_RANK / WORLD_SIZE as torchrun sets them (defaults: one process)."""
    try:
        return Env(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
        )
    except ValueError:
        raise TinyLMError(
            "RANK, LOCAL_RANK and WORLD_SIZE must be integers; start distributed runs with "
            "torchrun, which sets them"
        ) from None


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA) and return
    this rank's device (cuda:LOCAL_RANK). Single process: `device` unchanged."""
    e = env()
    if not e.distributed or dist.is_initialized():
        return _local_device(device, e)
    device = _local_device(device, e)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    # A rank stuck waiting for the others (one died, a signal reached only some) gives up
    # after this long instead of holding its device forever.
    timeout = datetime.timedelta(minutes=int(os.environ.get("TINYLM_DIST_TIMEOUT_MIN", 30)))
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, timeout=timeout, **kwargs)
    atexit.register(teardown)
    return device


def _local_device(device: torch.device, e: Env) -> torch.device:
    if device.type != "cuda" or not e.distributed:
        return device
    if e.local_rank >= torch.cuda.device_count():
        raise TinyLMError(
            f"LOCAL_RANK {e.local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
            "visible; start at most that many processes per node (--nproc_per_node)"
        )
    return torch.device("cuda", e.local_rank)  # one GPU per process, by local rank


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else env().rank


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 writes the run directory, metrics, progress and checkpoints; others are silent."""
    return rank() == 0


def print0(message: str) -> None:
    if is_main():
        print(message, file=sys.stderr, flush=True)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


# --- collectives the trainer needs ----------------------------------------------------


def all_reduce(values: list[float], op: str = "sum", device: torch.device | None = None
               ) -> list[float]:  # fmt: skip
    """Sum (or max) a few numbers over all ranks, in float64; identity in one process."""
    if not dist.is_initialized():
        return values
    device = device if device is not None and device.type == "cuda" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of one scalar over all ranks (equal-sized shares: the global-batch mean),
    as a 0-dim tensor on its device: nothing waits for it until someone reads it."""
    if not dist.is_initialized():
        return value.detach()
    t = value.detach().to(torch.float64).reshape(1)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).reshape(())


def seed_rank_rng(seed: int, step: int) -> None:
    """Rank r > 0 draws dropout from its own stream, derived from (seed, rank, step).

    Rank 0 keeps the stream seeded with `seed` (a one-process run's; a checkpoint saves and
    restores it), so model init, identical on every rank, and a one-rank run are unchanged.
    """
    r = rank()
    if r > 0:
        torch.manual_seed(int(np.random.SeedSequence([seed, r, step]).generate_state(1)[0]))


# --- the global batch, split over ranks -------------------------------------------------


def batch_split(batch_size: int, grad_accum: int, micro_batch_size: int, world: int
                ) -> tuple[int, int]:  # fmt: skip
    """(sequences per forward pass on one rank, micro-batches per rank per step).

    The global batch is batch_size * grad_accum sequences for any number of ranks.
    micro_batch_size 0 splits each micro-step's batch_size over the ranks; a set value
    fixes each rank's forward pass and derives the accumulation instead.
    """
    global_batch = batch_size * grad_accum
    if micro_batch_size == 0:
        if batch_size % world:
            raise TinyLMError(
                f"train.batch_size={batch_size} does not split evenly over {world} processes; "
                f"use a multiple of {world} (the global batch is batch_size x grad_accum = "
                f"{global_batch} sequences), or set train.micro_batch_size"
            )
        return batch_size // world, grad_accum
    if global_batch % (world * micro_batch_size):
        raise TinyLMError(
            f"the global batch of {global_batch} sequences (train.batch_size x "
            f"train.grad_accum) does not split into {world} processes x "
            f"train.micro_batch_size={micro_batch_size}; choose a micro_batch_size that "
            f"divides {global_batch // world if global_batch % world == 0 else global_batch}"
            f"{'' if global_batch % world == 0 else f' and a global batch divisible by {world}'}"
        )
    return micro_batch_size, global_batch // (world * micro_batch_size)


# --- wrapping the model -----------------------------------------------------------------


def wrap(model: nn.Module, parallel: str, device: torch.device) -> nn.Module:
    """The module the training step calls. One process: `model` itself.

    ddp   DistributedDataParallel: a full replica per rank, gradients all-reduced.
    fsdp  FSDP2: each transformer block, then the root (embeddings, final norm, output
          layer), is sharded over the ranks; parameters become DTensors, gathered for
          each forward and backward. fully_shard changes `model` in place and returns it.
    """
    if not dist.is_initialized():
        return model
    if parallel == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # The root group holds the embeddings and the output layer, whose weight the chunked
    # loss reads outside forward: gathered from forward until its backward has run.
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, enabled: bool) -> Iterator[None]:
    """Accumulate locally on all but the last micro-batch of a step (no communication)."""
    if enabled or not dist.is_initialized():
        yield
    elif isinstance(wrapped, nn.parallel.DistributedDataParallel):
        with wrapped.no_sync():
            yield
    else:  # FSDP2
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)


def clip_grad_norm(parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip by the norm of all gradients of the whole model, which for FSDP2's sharded
    (DTensor) gradients needs the shards' partial norms combined over ranks. Returns the
    norm before clipping as a 0-dim tensor on the device (no host sync)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads)
    if hasattr(total, "full_tensor"):  # a DTensor: sum of squares still partial per rank
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total


# --- full (consolidated) state for checkpoints ----------------------------------------


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's tensors on the CPU of rank 0 ({} on other ranks). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer
                         ) -> dict[str, dict[str, torch.Tensor]]:  # fmt: skip
    """{parameter name: {exp_avg, exp_avg_sq, step}} for the whole model, on rank 0's CPU
    ({} elsewhere). Collective."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options).get("state", {})


def load_full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, dict[str, torch.Tensor]],
) -> None:
    """Put a full (unsharded) state into a sharded model and optimizer; each rank keeps its
    shard. Every rank passes the same full state (each reads the checkpoint)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    if optimizer_state:
        # The current state dict supplies param_groups keyed by parameter name.
        full = get_optimizer_state_dict(model, optimizer, options=options)
        full["state"] = optimizer_state
        set_optimizer_state_dict(model, optimizer, full, options=options)
