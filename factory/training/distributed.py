"""Multi-process data parallelism under torchrun (gloo on CPU, nccl on CUDA): the supernet trainer, and
the predictor's measurements (`factory.evaluate.evaluate_on` with a context shards validation batches).

Why not `DistributedDataParallel`: the active sub-network changes between the micro-steps of one
optimizer step, so different parameters receive gradients in each backward pass. DDP's bucketed
all-reduce fires during backward and expects the same set of used parameters every time
(`find_unused_parameters` would re-scan the graph per micro-step and still reduce per backward).
Here every rank runs the same sub-networks (sampling is seeded by the global step), accumulates
gradients locally over all of them, and then ONE flat all-reduce averages every parameter's gradient
(zeros for parameters no sub-network used). That is one collective per optimizer step, correct by
construction, and identical in single-process runs (where the reduction is skipped but the zero
filling is not, so 1 and N processes follow the same update rule).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from factory.errors import UserInputError


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError("device: 'cuda' requested but PyTorch sees no CUDA device; use --device cpu or auto")
        return torch.device("cuda", local_rank)
    if choice == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    raise UserInputError(f"device: got {choice!r}; allowed: 'auto', 'cpu', 'cuda'")


@dataclass
class DistContext:
    """Rank, world size and device of this process; collectives are no-ops when world_size == 1."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    @classmethod
    def from_env(cls, device_choice: str) -> DistContext:
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; initialise the process group when > 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(device_choice, local_rank)
        if world <= 1:
            return cls(rank=0, world_size=1, device=device)
        owns = False
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            owns = True
        return cls(rank=rank, world_size=world, device=device, owns_group=owns)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    @torch.no_grad()
    def broadcast_state(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        if self.world_size == 1:
            return
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)

    @torch.no_grad()
    def broadcast_buffers(self, module: nn.Module) -> None:
        """BN running statistics differ per rank (different shards); make them rank 0's."""
        if self.world_size == 1:
            return
        for t in module.buffers():
            dist.broadcast(t.data, src=0)

    @torch.no_grad()
    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Fill missing gradients with zeros, then average all gradients across ranks in one all-reduce."""
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.world_size == 1:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` (any picklable value) on every rank; what the other ranks pass is ignored."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum a few floats across ranks (epoch loss / image counts for the log, evaluation counts)."""
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()
