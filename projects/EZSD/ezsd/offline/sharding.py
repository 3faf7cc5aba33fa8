"""Deterministic image split and torch.distributed rank handling for the offline tools.

Images are ordered by image id (integers numerically, others as strings) and dealt
round-robin: shard i of K gets positions i, i+K, i+2K, ... That split depends on the image list
alone, shards have similar sizes and mixes, and the union of all shards is the whole list, each
image once.

Under `torchrun --nproc-per-node N` each rank takes a shard: with `--num-shards K --shard-id i`
as well (several nodes or jobs, each with N ranks), rank r of job i takes shard i*N + r of K*N.
"""

import datetime
import os

import torch

__all__ = [
    "image_order_key",
    "shard_records",
    "ShardSpec",
    "distributed_shard",
    "finish_distributed",
]


def image_order_key(record):
    """Sort key of a dataset dict: integer ids numerically (COCO), any other id as a string."""
    image_id = record["image_id"]
    return (0, image_id, "") if isinstance(image_id, int) else (1, 0, str(image_id))


def shard_records(records, num_shards, shard_id, key=image_order_key):
    """The records of shard `shard_id` of `num_shards` (round-robin over the key order)."""
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard {shard_id} of {num_shards}: need 0 <= shard-id < num-shards")
    ordered = sorted(records, key=key)
    return ordered[shard_id::num_shards]


class ShardSpec:
    def __init__(self, num_shards, shard_id, rank=0, world_size=1, distributed=False):
        self.num_shards, self.shard_id = num_shards, shard_id
        self.rank, self.world_size, self.distributed = rank, world_size, distributed

    @property
    def name(self):
        return f"{self.shard_id:05d}-of-{self.num_shards:05d}"

    def __repr__(self):
        return f"shard {self.shard_id} of {self.num_shards} (rank {self.rank} of {self.world_size})"


def distributed_shard(num_shards=1, shard_id=0, device="cpu"):
    """Join the torch.distributed job started by torchrun, if any, and return this process's
    ShardSpec. Backend gloo on CPU, nccl on CUDA (one GPU per local rank). Returns the device
    this process should use."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ShardSpec(num_shards, shard_id), device
    rank = int(os.environ["RANK"])
    device = torch.device(device)
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(hours=24),  # ranks wait for the slowest at the end
        )
    spec = ShardSpec(num_shards * world, shard_id * world + rank, rank, world, distributed=True)
    return spec, device


def finish_distributed(spec):
    """Wait for every rank, then leave the process group. True on the rank that should merge."""
    if not spec.distributed:
        return True
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return spec.rank == 0
