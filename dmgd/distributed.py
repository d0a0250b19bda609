"""Runs split across processes and machines with torch.distributed, as torchrun launches them.

    torchrun --nproc_per_node=2 -m dmgd run recipe.dmgd --out OUT          # one machine
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 \\
             --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 -m dmgd run ... # one of two machines

`setup(device)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT). Without it (or with WORLD_SIZE=1) the run is a single process and nothing here
does anything. With it, the process group is started: NCCL when the run's device is CUDA
(each rank on `cuda:LOCAL_RANK`), gloo on the CPU. Python objects (targets, distances,
errors) always travel through a gloo group, so that they never need a GPU copy.

Sharding: the run's classes are cut into fixed blocks of `batch` consecutive classes
(`class_blocks`); block b belongs to rank b mod WORLD_SIZE. A block is always sampled as one
batch, whatever the number of ranks and whatever was finished before a crash, because the
numbers a batched forward pass gives a row depend (in their last bits) on the batch's size:
fixed blocks are what make a 2-rank run, a resumed run and a single-process run write the
same bytes. See docs/running.md.
"""

from __future__ import annotations

import datetime
import math
import os
from typing import Any, Callable, Sequence

from dmgd.device import pick_device
from dmgd.errors import DmgdError

DEFAULT_TIMEOUT_MINUTES = 30
MAX_BLOCK = 64


class DistributedError(DmgdError):
    """torchrun's environment or the process group cannot be used."""


class PeerError(DistributedError):
    """Another rank failed; this rank stops with the same message (the CLI prints it once)."""

    echo = True


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    raw = {name: os.environ.get(name) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if raw["WORLD_SIZE"] in (None, ""):
        return 0, 1, 0
    try:
        world = int(raw["WORLD_SIZE"])
        rank = int(raw["RANK"] if raw["RANK"] not in (None, "") else 0)
        local = int(raw["LOCAL_RANK"] if raw["LOCAL_RANK"] not in (None, "") else rank)
    except ValueError:
        raise DistributedError(
            f"torchrun's environment is not numbers (RANK={raw['RANK']!r}, WORLD_SIZE={raw['WORLD_SIZE']!r}, "
            f"LOCAL_RANK={raw['LOCAL_RANK']!r}); launch dmgd with torchrun, or unset these variables"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} do not make sense; "
                               "launch dmgd with torchrun, or unset these variables")
    if world > 1 and raw["RANK"] in (None, ""):
        raise DistributedError(f"WORLD_SIZE={world} but RANK is not set; launch dmgd with torchrun")
    return rank, world, local


class Context:
    """This process's place in the run: rank, world size, and the collectives dmgd uses.

    With world_size 1 every collective is the identity, so the runner has one code path."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, backend: str | None = None,
                 owns_group: bool = False, objects: Any = None) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.backend = backend
        self._owns_group = owns_group
        self._objects = objects  # the group for object collectives (None: the default group)

    def __repr__(self) -> str:
        return f"Context(rank={self.rank}, world_size={self.world_size}, backend={self.backend!r})"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=self._objects)

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (pickled through the gloo group)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._objects)
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=src, group=self._objects)
        return box[0]

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on rank 0 only and give every rank its result. A DmgdError (or OSError)
        on rank 0 is raised there and, as a PeerError with the same message, on every other
        rank."""
        if not self.distributed:
            return fn()
        outcome: tuple[str, Any]
        error: BaseException | None = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except (DmgdError, OSError) as e:
                error, outcome = e, ("error", str(e))
        else:
            outcome = ("", None)
        outcome = self.broadcast(outcome if self.is_main else None)
        if error is not None:
            raise error
        if outcome[0] == "error":
            raise PeerError(outcome[1])
        return outcome[1]

    def close(self) -> None:
        """End the process group if `setup` started it."""
        if self._owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._owns_group = False


def _device_for(device: str | None, local_rank: int, world: int) -> str:
    """`pick_device`, and under torchrun plain "cuda" is this rank's own GPU."""
    device = pick_device(device)
    if device != "cuda" or world == 1:
        return device
    import torch

    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DistributedError(
            f"this rank's LOCAL_RANK is {local_rank} but the machine has {count} CUDA device(s): "
            f"start at most {count} processes a machine (--nproc_per_node={count})"
        )
    return f"cuda:{local_rank}"


def setup(device: str | None = None) -> tuple[Context, str]:
    """(Context, the device this rank runs on) from torchrun's environment.

    Starts the process group when WORLD_SIZE > 1 (unless the caller already did, as a
    script may). Raises DistributedError when the environment is unusable."""
    rank, world, local = env_world()
    device = _device_for(device, local, world)
    if world == 1:
        return Context(), device
    import torch
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    owns = False
    if not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        minutes = float(os.environ.get("DMGD_DIST_TIMEOUT_MINUTES", DEFAULT_TIMEOUT_MINUTES))
        try:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=minutes),
                                    **({"device_id": torch.device(device)} if backend == "nccl" else {}))
        except (RuntimeError, ValueError) as e:
            raise DistributedError(
                f"cannot start the {backend} process group (rank {rank} of {world}): {e}. "
                "Launch dmgd with torchrun, which sets MASTER_ADDR and MASTER_PORT"
            ) from None
        owns = True
    else:
        backend = str(dist.get_backend())
        if dist.get_world_size() != world or dist.get_rank() != rank:
            raise DistributedError("the process group does not match RANK and WORLD_SIZE")
    objects = dist.new_group(backend="gloo") if backend != "gloo" else None
    return Context(rank, world, local, backend, owns, objects), device


# --------------------------------------------------------------------------- sharding


def default_block_size(num_classes: int) -> int:
    """Classes a block holds when --batch is not given: the classes cut into
    max(2, ceil(C / 64)) blocks of (nearly) equal size, so that two ranks always have work
    and no batch is larger than 64 classes. It depends on C alone, never on the world size."""
    if num_classes <= 1:
        return 1
    blocks = max(2, math.ceil(num_classes / MAX_BLOCK))
    return math.ceil(num_classes / blocks)


def class_blocks(num_classes: int, block_size: int) -> list[tuple[int, ...]]:
    """Classes 0..C-1 in consecutive blocks of `block_size` (the last may be shorter)."""
    if block_size < 1:
        raise ValueError(f"block size must be positive, not {block_size}")
    return [tuple(range(s, min(num_classes, s + block_size))) for s in range(0, num_classes, block_size)]


def blocks_of_rank(blocks: Sequence[tuple[int, ...]], rank: int, world_size: int) -> list[tuple[int, ...]]:
    """Block b goes to rank b mod world_size."""
    return [block for b, block in enumerate(blocks) if b % world_size == rank]
