"""Data-parallel harvest on torch.distributed: which batches a rank harvests, and the two collectives it needs.

    torchrun --nproc-per-node 4 -m data_pipelines.cli --max-tokens 4000000     # or: specmd-harvest --nproc 4
    ranks = join_group("cuda")         # inside harvest(): a no-op Ranks() when not launched by torchrun
    ranks.share(num_batches)           # this rank's contiguous range of batch indices
    ranks.broadcast(obj); ranks.gather(obj)

Every rank reads the same token stream and keeps one contiguous range of whole batches, so each forward is
the very forward a single-process harvest makes (same batch, same shapes) and the ranks' shards, put one after
another in rank order, are the single-process dataset row for row. Rank 0 owns the output: it makes the temp
folder, waits for every rank's shards (`gather`), names them into one dataset, writes the manifest and renames
the folder into place. The output folder must be on a filesystem every node sees.

The process group is torch's (gloo on CPU, nccl on CUDA), set up from torchrun's environment; a rank that
dies is torchrun's to notice: it stops the others, and the temp folder is never renamed into place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from data_pipelines.config import HarvestError, describe_error

# Ranks meet twice: at the start, and when each has harvested its share. Shares are equal, so the wait at the
# second meeting is short, but a slow node still must not be declared dead: generous.
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


@dataclass
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialized the process group, so we destroy it at the end

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def share(self, num_batches: int) -> range:
        """Contiguous batch indices of this rank: equal shares (+-1), rank order = batch order."""
        return range(self.rank * num_batches // self.world_size, (self.rank + 1) * num_batches // self.world_size)

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank (also a barrier)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def launched_world_size() -> int:
    """How many ranks torchrun started (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def join_group(device_type: str) -> Ranks:
    """The ranks of this harvest: torch.distributed from torchrun's environment, or a single process."""
    world_size = launched_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 1:
        return Ranks()
    if dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    except Exception as err:  # unreachable MASTER_ADDR, port in use, ...
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise HarvestError(f"cannot join the torch.distributed group at {where}: {describe_error(err)}") from err
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def check_share_sizes(num_sequences: int, batch_size: int, world_size: int) -> None:
    """Refuse more ranks than batches: a rank with nothing to harvest is a mistake, not a feature."""
    num_batches = -(-num_sequences // batch_size)
    if world_size > num_batches:
        raise HarvestError(
            f"{world_size} processes is more than the data: {num_sequences} sequences make {num_batches} "
            f"batch(es) of {batch_size}; use at most {num_batches} processes, a smaller batch_size or more max_tokens"
        )
