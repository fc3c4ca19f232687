"""Writes a ~1.4 GB GPT-2-medium-shaped torch.distributed.checkpoint with 4 gloo ranks on CPU:
FSDP-style Shard(0) for the embedding (50257 rows: an uneven split) and the column-parallel
weights, tensor-parallel Shard(1) for the row-parallel ones, replicated norms. Each rank makes
only its own shards (DTensor.from_local), so no process holds the whole model.

    python bench/make_dcp.py OUT_DIR
"""

import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.tensor import DTensor, Replicate, Shard, init_device_mesh

WORLD = 4
LAYERS, D, VOCAB = 24, 1024, 50257


def shapes():
    yield "wte.weight", (VOCAB, D), Shard(0)
    yield "wpe.weight", (1024, D), Shard(0)
    for i in range(LAYERS):
        p = f"h.{i}."
        yield p + "ln_1.weight", (D,), Replicate()
        yield p + "attn.qkv.weight", (3 * D, D), Shard(0)
        yield p + "attn.proj.weight", (D, D), Shard(1)
        yield p + "ln_2.weight", (D,), Replicate()
        yield p + "mlp.fc.weight", (4 * D, D), Shard(0)
        yield p + "mlp.proj.weight", (D, 4 * D), Shard(1)
    yield "ln_f.weight", (D,), Replicate()


def local_shape(shape, placement, rank):
    if not isinstance(placement, Shard):
        return shape
    d = placement.dim
    per = -(-shape[d] // WORLD)  # torch.chunk's split: ceil, the last rank takes the rest
    start = min(per * rank, shape[d])
    n = min(per, shape[d] - start)
    return shape[:d] + (n,) + shape[d + 1 :]


def rank_main(rank, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    mesh = init_device_mesh("cpu", (WORLD,))
    g = torch.Generator().manual_seed(rank)
    sd = {}
    for name, shape, placement in shapes():
        local = torch.randn(local_shape(shape, placement, rank), generator=g)
        if not isinstance(placement, Shard):
            local = torch.ones(shape)  # replicated: equal on every rank
        stride = torch.empty(shape, device="meta").stride()
        sd[name] = DTensor.from_local(local, mesh, [placement], run_check=False, shape=torch.Size(shape), stride=stride)
    dcp.save({"model": sd}, checkpoint_id=out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    out = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(rank_main, args=(os.path.join(tmp, "init"), out), nprocs=WORLD, join=True)
