"""Gather embeddings across processes with correct gradients (multi-GPU negatives).

``torch.distributed.all_gather`` returns tensors detached from the autograd graph: negatives gathered
from other processes would send no gradient back to the process that produced them. :func:`gather`
keeps them differentiable, as the ``GatherLayer`` of SimCLR / solo-learn / lightly:

* forward: every process receives the concatenation ``[world_size * B, ...]`` of all processes' tensors
  (equal shapes on every process);
* backward: each process holds the gradient of *its own* loss with respect to the whole gathered tensor;
  the gradients are summed over processes (``all_reduce``) and each process keeps its own slice. The
  result is the gradient of ``sum_r loss_r`` with respect to the local tensor; DDP then averages
  parameter gradients over processes, so training matches one process that sees the whole batch and
  minimises ``mean_r loss_r`` (tested against a single-process run in ``tests/test_distributed.py``).

Without an initialised process group (or with one process) :func:`gather` returns its input unchanged.
Contrastive losses take the gathered tensor through their ``neg=`` argument.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.rank, ctx.size = dist.get_rank(), x.size(0)
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size:(ctx.rank + 1) * ctx.size]


def gather(x: Tensor) -> Tensor:
    """All processes' ``x`` concatenated along dim 0, differentiable (see the module docstring)."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


__all__ = ["gather", "is_distributed"]
