"""Data-parallel evaluation under `torchrun`: who this process is, which samples it runs, and how
rank 0 learns what the others produced.

One process per GPU with nccl, or gloo wherever ranks share a GPU or run on the CPU. Every rank plans the same sample list;
rank 0 decides which samples are still pending and broadcasts that list, each rank takes every
`world_size`-th pending sample (deterministic by index, so a resumed run with another number of
ranks still covers each sample exactly once), appends its predictions to its own cache file,
and rank 0 gathers the predictions, scores and writes the run files. Nothing here depends on
the number of ranks, so results are identical to a single-process run.

Outside torchrun (no `WORLD_SIZE` in the environment, or 1) everything is a no-op and no
process group is created.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from evalkit.errors import EvalkitError

T = TypeVar("T")

# Ranks wait for the slowest one at each task's gather; shards are balanced but a long task on a
# slow device can still take a while, so the collective timeout is generous (minutes, overridable).
DEFAULT_TIMEOUT_MIN = 120
BACKENDS = ("nccl", "gloo")


class DistributedError(EvalkitError, RuntimeError):
    """A failure on rank 0 that every rank must stop on (e.g. a run folder of another model)."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, world size and rank within its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        """What torchrun (or any launcher setting RANK/WORLD_SIZE/LOCAL_RANK) says."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        if world < 1 or not 0 <= rank < world:
            raise DistributedError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
        return cls(rank=rank, world_size=world, local_rank=local)

    # ------------------------------------------------------------ lifecycle

    def device(self) -> str | None:
        """The device this rank should load the model on under torchrun: its own GPU where each local
        rank has one, else the visible GPUs shared round-robin (e.g. SLURM's one device per task);
        None (the default device) outside torchrun or without CUDA."""
        if not self.enabled:
            return None
        import torch

        if not torch.cuda.is_available():
            return None
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"

    def rank_device(self, requested: str | None) -> str | None:
        """The device a rank runs on when `requested` was asked for: no device or plain "cuda" means
        this rank's GPU under torchrun (as `device`), anything else (cpu, cuda:N) is taken as given."""
        return (self.device() or requested) if requested in (None, "cuda") else requested

    def own_devices(self) -> bool:
        """Does every rank on this node have a GPU of its own (cuda:LOCAL_RANK exists for all of them)?
        nccl needs that: two ranks on one device fail in nccl, and cuda:1 on a one-GPU machine does
        not exist."""
        import torch

        return torch.cuda.is_available() and torch.cuda.device_count() >= self.local_world_size

    @property
    def local_world_size(self) -> int:
        """Ranks on this node: torchrun's LOCAL_WORLD_SIZE, else (other launchers) the world size,
        the safe assumption that every rank may be on this node."""
        return int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))

    def backend(self, device: str | None = None) -> str:
        """nccl when every local rank has its own GPU and the model runs on CUDA, gloo otherwise.
        EVALKIT_DIST_BACKEND=gloo|nccl overrides (tests force gloo). evalkit's collectives are a few
        small objects per batch, so gloo costs nothing measurable."""
        forced = os.environ.get("EVALKIT_DIST_BACKEND", "").strip().lower()
        if forced:
            if forced not in BACKENDS:
                raise DistributedError(f"EVALKIT_DIST_BACKEND={forced!r}: use one of {', '.join(BACKENDS)}")
            return forced
        on_cuda = device is None or device.startswith("cuda")
        return "nccl" if on_cuda and self.own_devices() else "gloo"

    def init(self, backend: str | None = None, device: str | None = None) -> Dist:
        """Join the process group with `backend` (default: see `backend()`, given the model's device)."""
        if not self.enabled:
            return self
        import torch
        import torch.distributed as dist

        if dist.is_initialized():
            return self
        backend = backend or self.backend(device)
        if backend == "nccl":
            torch.cuda.set_device(self.local_rank)  # object collectives use the current device
        minutes = float(os.environ.get("EVALKIT_DIST_TIMEOUT_MIN", DEFAULT_TIMEOUT_MIN))
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=minutes))
        return self

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    # ------------------------------------------------------------ work split and exchange

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share: items rank, rank + world_size, ... (round-robin keeps shards balanced)."""
        return list(items[self.rank :: self.world_size])

    def steps(self, n_items: int, batch_size: int) -> int:
        """Batches the largest shard of `n_items` needs: every rank runs this many steps, in lockstep."""
        largest = -(-n_items // self.world_size)
        return -(-largest // batch_size)

    def sum(self, *values: int) -> tuple[int, ...]:
        """Each value summed over all ranks (all-reduce), returned on every rank."""
        if not self.enabled:
            return values
        import torch
        import torch.distributed as dist

        device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
        tensor = torch.tensor(values, dtype=torch.int64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tuple(int(v) for v in tensor.tolist())

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only and hand its result to every rank.

        If it raises, every rank raises (the same message as DistributedError on the others),
        so a check made once on rank 0 cannot leave the other ranks waiting in a collective.
        """
        if not self.enabled:
            return fn()
        import torch.distributed as dist

        box: list[Any] = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as exc:  # shared with the other ranks, then re-raised here
                error = exc
                box[0] = ("error", f"{exc}")
        dist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if error is not None:
            raise error
        if status == "error":
            raise DistributedError(value)
        return value

    def gather(self, value: T) -> list[T] | None:
        """Every rank's `value`, in rank order, on rank 0 (None on the others)."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, out, dst=0)
        return out
