"""Data-parallel training over several processes (torchrun: several GPUs, or gloo on CPU).

Launch any ``clipbench run`` under ``torchrun --nproc_per_node=N -m benchmark.cli run ...``.
Every rank builds the same plan and walks the same stages in the same order; training
stages run on all ranks, each on its shard of every *global* batch; poisoning and
evaluation run on rank 0 only; rank 0 alone writes the cache and the result files, and
the ranks meet at a barrier after every stage (the cache must be on a filesystem all
ranks see: automatic on one machine).

Exactness. With the same global batch size, training on N ranks follows the
single-process loss trajectory up to float rounding, because

- the global batches are the single-process batches: the same ``RandomSampler`` (same
  generator, same consumption) cut into N contiguous shards (:class:`ShardedBatchSampler`;
  torch's ``DistributedSampler`` would draw a different permutation);
- the contrastive loss sees the whole global batch: features are all-gathered *with
  gradient* (:func:`gather_with_grad`, open_clip's ``ClipLoss(gather_with_grad=True,
  local_loss=False)``) and captions are all-gathered for the duplicate-caption targets;
  every rank computes the same global loss ``L``;
- batch norm (the ModifiedResNet towers) uses the global batch statistics
  (:class:`GlobalBatchNorm2d`, a differentiable SyncBatchNorm that also runs on CPU);
- gradients are summed across ranks and divided by N (:func:`average_gradients`): each
  rank's gradient carries ``N x`` its share of ``dL`` (the gathers' backward sums the N
  identical losses), so the mean over ranks is exactly ``dL/dtheta``.

We average gradients by hand instead of wrapping the model in DDP: objectives call
``model.encode_image`` / ``encode_text`` directly (CleanCLIP's in-modal terms), which
would bypass DDP's forward hooks. Objectives that do not use ``ctx.all_gather`` (see
:class:`~benchmark.losses.StepContext`) still train correctly, with per-rank negatives.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


@dataclass
class DistContext:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_from_env(device: str = "auto", timeout_s: float = 3600) -> DistContext | None:
    """Join the torchrun job described by the environment; None when not under torchrun.

    Backend: NCCL when CUDA is used, gloo otherwise. Rank ``r`` uses ``cuda:LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=_dt.timedelta(seconds=timeout_s))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev)


# ------------------------------------------------------------------ differentiable collectives
class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradients of every rank and keeps this rank's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n = world_size()
        sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(n)]
        dist.all_gather(sizes, torch.tensor([x.shape[0]], dtype=torch.long, device=x.device))
        sizes_ = [int(s) for s in sizes]
        biggest = max(sizes_)
        padded = x.contiguous()
        if x.shape[0] < biggest:
            padded = torch.cat([padded, padded.new_zeros((biggest - x.shape[0], *x.shape[1:]))])
        out = [torch.empty_like(padded) for _ in range(n)]
        dist.all_gather(out, padded)
        ctx.sizes, ctx.rank = sizes_, rank()
        return torch.cat([o[:s] for o, s in zip(out, sizes_)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


class _AllReduceWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.contiguous().clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Rows of every rank, in rank order, differentiable (identity on one process)."""
    return _GatherWithGrad.apply(x) if is_distributed() else x


def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, differentiable (identity on one process)."""
    return _AllReduceWithGrad.apply(x) if is_distributed() else x


def local_rows(n: int) -> tuple[int, int]:
    """``(offset, total)``: this rank's ``n`` rows start at ``offset`` in :func:`gather_with_grad`'s
    output of ``total`` rows (``(0, n)`` on one process)."""
    if not is_distributed():
        return 0, n
    sizes: list[Any] = [None] * world_size()
    dist.all_gather_object(sizes, int(n))
    return sum(sizes[: rank()]), sum(sizes)


def gather_list(items: Sequence[Any]) -> list[Any]:
    """Concatenation of every rank's list, in rank order (identity on one process)."""
    if not is_distributed():
        return list(items)
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, list(items))
    return [x for part in out for x in part]


# --------------------------------------------------------------------------- batch norm
class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the global batch of all ranks (SyncBatchNorm that also runs on CPU).

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``; identical to it on
    one process. Statistics: mean, then the centred second moment, both all-reduced with
    gradient; running statistics use the unbiased global variance, as BatchNorm does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not (self.training and is_distributed()):
            return super().forward(x)
        c = x.shape[1]
        count = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        total = all_reduce_with_grad(torch.cat([xf.sum(dim=(0, 2, 3)), count.to(xf.dtype)]))
        n = total[-1]
        mean = total[:c] / n
        centred = xf - mean.view(1, c, 1, 1)
        var = all_reduce_with_grad(centred.pow(2).sum(dim=(0, 2, 3))) / n
        with torch.no_grad():
            if self.track_running_stats and self.running_mean is not None:
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / max(float(n) - 1, 1.0), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def use_global_batchnorm(model: nn.Module) -> list[nn.Module]:
    """Switch every plain BatchNorm2d of ``model`` to :class:`GlobalBatchNorm2d` in place."""
    switched = []
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d
            switched.append(m)
    return switched


def restore_batchnorm(switched: list[nn.Module]) -> None:
    for m in switched:
        m.__class__ = nn.BatchNorm2d


# ---------------------------------------------------------------------------- gradients
@torch.no_grad()
def broadcast_parameters(model: nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if not is_distributed():
        return
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


@torch.no_grad()
def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Mean of the gradients over ranks, as one flat all-reduce."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


# ------------------------------------------------------------------------------ sampling
class ShardedBatchSampler(Sampler[list[int]]):
    """This rank's contiguous share of every batch of ``batch_sampler``.

    Wrapping the very batch sampler a single-process DataLoader would build keeps the
    global batches identical to the single-process run.
    """

    def __init__(self, batch_sampler: Any, rank: int, world: int):
        self.batch_sampler, self.rank, self.world = batch_sampler, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batch_sampler:
            n = len(batch)
            lo = (n * self.rank) // self.world
            hi = (n * (self.rank + 1)) // self.world
            yield list(batch[lo:hi])

    def __len__(self) -> int:
        return len(self.batch_sampler)
