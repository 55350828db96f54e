"""Worker for `test_fsdp_cpu.py` (run by torchrun, 2 CPU processes over gloo): two student updates with the
student wrapped by FSDP2 `fully_shard` or by DDP; rank 0 saves the full weights."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist


def main(mode: str, out: str) -> None:
    from t5_compact.costs.models import RunSpec, build_models
    from t5_compact.costs.update import UpdateShape, adapter_for, run_update

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    models = build_models(RunSpec("flux", {}, {}, True, "tiny:flux"), torch.float32)
    models.student.eval()  # no dropout: both wrappings must see the same function
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in models.student.encoder.block:
            fully_shard(block)
        fully_shard(models.student)
    else:
        models.student = torch.nn.parallel.DistributedDataParallel(models.student)
    optimizer = torch.optim.AdamW(models.student.parameters(), lr=1e-2)
    adapter = adapter_for(models, vae_scale_factor=1)
    torch.manual_seed(1 + rank)  # each rank its own latents / targets, as in data-parallel training
    for _ in range(2):
        run_update(models, adapter, "trajectory_cache", UpdateShape(batch=2, resolution=32, seq_len=8), optimizer)
    module = models.student if mode == "fsdp" else models.student.module
    state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach() for k, v in module.state_dict().items()}
    if rank == 0:
        torch.save(state, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
