r"""Gather embeddings across processes with correct gradients (multi-GPU negatives).

``torch.distributed.all_gather`` returns tensors detached from the autograd graph: negatives gathered
from other processes would send no gradient back to the process that produced them. :func:`gather`
keeps them differentiable, as the ``GatherLayer`` of SimCLR / solo-learn (``solo/utils/misc.py``) and
lightly (``lightly/utils/dist.py``), and additionally allows a different number of rows per process:

* forward: every process receives the concatenation ``[sum_r B_r, ...]`` of all processes' tensors in
  rank order. The row counts ``B_r`` are exchanged first (one ``all_gather`` of a one-element tensor
  and one host read: the output shape depends on them); each tensor is padded to ``max_r B_r`` rows,
  all-gathered, and the padding is cut off again (pad and strip, so no caller sees a padded row);
* backward: each process holds the gradient of *its own* loss with respect to the whole gathered
  tensor; the gradients are summed over processes (``all_reduce``) and each process keeps its own
  rows ``[offset_r, offset_r + B_r)``. The result is the gradient of :math:`\sum_r L_r` with respect to
  the local tensor.

Reductions (what a loss must return so that DDP reproduces one process on the whole batch; tested in
``tests/test_distributed.py``):

* **per-rank losses** (the contrastive losses: local anchors, global candidates): DDP averages
  parameter gradients, so the ranks together minimise :math:`\frac1W\sum_r L_r`. With equal local
  batch sizes this is the single-process loss on the concatenated batch and the gradients are the
  single-process gradients. With unequal sizes the single-process loss is the *batch-size-weighted*
  mean :math:`\sum_r \frac{B_r}{B} L_r` (``B = sum_r B_r``); to also get its gradients, back-propagate
  ``L_r * W * B_r / B`` on every rank.
* **a global loss** computed identically on every rank (the GCA-HNG generator on the gathered batch):
  every rank's backward sends ``dL/dx`` for all rows, the ``all_reduce`` makes it ``W dL/dx_r`` on the
  local rows, and DDP's average divides by ``W`` again, so the gradients are exactly the
  single-process ones, for any local batch sizes.

Every process must call :func:`gather` the same number of times in the same order (collectives), and
every gathered tensor must take part in every rank's backward (or in none).

Where gathering is decided. :func:`gather_layout` is the one place that decides whether rows are
gathered (``enabled`` and :func:`is_distributed`) and describes the result as a :class:`GatherLayout`
(every process's row count, this process's offset and slice); :func:`gather_rows` gathers tensors
with a layout (no second size exchange). Every consumer goes through these two and reads the layout
instead of testing a sentinel: the contrastive losses (:func:`graphneg.losses.contrastive.contrastive_pairs`
stores it in ``ContrastivePairs.layout``) and their UnReMix score logging, the GCA-HNG generator
(``GCAHNG(gather_distributed=True)``), ``MetricLearningModule``'s evaluation and the probes of
:mod:`graphneg.callbacks` (evaluation shards of unequal size per process). :func:`gather` (layout +
rows in one call), :func:`all_sizes` and :func:`local_offset` are thin conveniences over them.

Without an initialised process group (or with one process) :func:`gather` returns its inputs unchanged
(offset 0), and :func:`gather_layout` a one-process layout (``gathered`` is ``False``).
"""
from __future__ import annotations

from typing import List, NamedTuple, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """``True`` inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_sizes(n_local: int, device: Union[torch.device, str, None] = None) -> List[int]:
    """Every process's ``n_local`` in rank order (``[n_local]`` outside a process group).

    One ``all_gather`` of a one-element int64 tensor on ``device`` (use the device the backend
    expects: CUDA for NCCL) and one host read.
    """
    if not is_distributed():
        return [int(n_local)]
    t = torch.tensor([int(n_local)], dtype=torch.long, device=device)
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return torch.cat(out).tolist()


def local_offset(n_local: int, device: Union[torch.device, str, None] = None) -> int:
    """Row of this process's first row in the gathered tensor (``sum`` of the lower ranks' sizes); the
    same as ``gather_layout(n_local, True, device).offset``."""
    if not is_distributed():
        return 0
    return sum(all_sizes(n_local, device)[: dist.get_rank()])


class GatherLayout(NamedTuple):
    """Where this process's rows sit among the rows of all processes (the result of a gather).

    ``sizes`` are the row counts of all processes in rank order (one entry without a process
    group); ``rank`` is this process's index into them. Built by :func:`gather_layout`.
    """

    sizes: Tuple[int, ...]
    rank: int = 0

    @classmethod
    def single(cls, n_local: int) -> "GatherLayout":
        """The layout of rows that are not gathered: this process's ``n_local`` rows only."""
        return cls((int(n_local),), 0)

    @property
    def local_rows(self) -> int:
        """This process's number of rows ``B_r``."""
        return self.sizes[self.rank]

    @property
    def global_rows(self) -> int:
        """Rows after gathering, ``sum_r B_r`` (``local_rows`` when not gathered)."""
        return sum(self.sizes)

    @property
    def offset(self) -> int:
        """Row of this process's first row among the gathered rows (``0`` when not gathered)."""
        return sum(self.sizes[: self.rank])

    @property
    def local_slice(self) -> slice:
        """This process's rows among the gathered rows: ``slice(offset, offset + local_rows)``."""
        return slice(self.offset, self.offset + self.local_rows)

    @property
    def gathered(self) -> bool:
        """``True`` when the rows span more than one process."""
        return len(self.sizes) > 1

    @property
    def world_size(self) -> int:
        return len(self.sizes)


def gather_layout(n_local: int, enabled: bool = True,
                  device: Union[torch.device, str, None] = None) -> GatherLayout:
    """The one decision whether rows are gathered, and their layout.

    Rows are gathered when ``enabled`` (a module's ``gather_distributed`` flag) and inside a process
    group of more than one process (:func:`is_distributed`); then every process's row count is
    exchanged once (:func:`all_sizes`: one ``all_gather`` of a one-element tensor on ``device`` and
    one host read, the only host synchronisation of gathering: the gathered shape depends on it).
    Otherwise the layout of this process's rows alone (:meth:`GatherLayout.single`, no
    communication). Every process of the group must call it with the same ``enabled``.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled (gather_distributed) must be True or False, got {enabled!r}")
    if not (enabled and is_distributed()):
        return GatherLayout.single(n_local)
    return GatherLayout(tuple(all_sizes(n_local, device)), dist.get_rank())


def gather_rows(layout: GatherLayout, *tensors: Tensor):
    """All processes' ``tensors`` concatenated along dim 0 in rank order, as ``layout`` describes.

    Returns the inputs themselves when ``layout.gathered`` is ``False``; otherwise the gathered
    tensors (``[layout.global_rows, ...]`` each), differentiable for floating tensors that require
    gradients (see the module docstring). Each tensor must have ``layout.local_rows`` rows. One
    tensor in: one tensor out; several: a tuple.
    """
    if not isinstance(layout, GatherLayout):
        raise TypeError(f"layout must be a GatherLayout (from gather_layout), got {type(layout).__name__}")
    if not tensors:
        raise TypeError("gather_rows needs at least one tensor")
    for i, x in enumerate(tensors):
        _check(x, i)
        if x.size(0) != layout.local_rows:
            raise ValueError(
                f"gather_rows: argument {i} has {x.size(0)} rows but the layout says this process has "
                f"{layout.local_rows}; build the layout with gather_layout(x.size(0), ...)"
            )
    if not layout.gathered:
        out = tuple(tensors)
    else:
        out = tuple(
            _GatherWithGrad.apply(x, layout.sizes) if x.requires_grad else _all_gather_padded(x, layout.sizes)
            for x in tensors
        )
    return out[0] if len(out) == 1 else out


def _all_gather_padded(x: Tensor, sizes: Sequence[int]) -> Tensor:
    x = x.contiguous()
    largest = max(sizes)
    if x.size(0) < largest:  # pad: all_gather needs one shape on every process
        x = torch.cat([x, x.new_zeros((largest - x.size(0),) + tuple(x.shape[1:]))])
    out = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(out, x)
    if all(s == largest for s in sizes):
        return torch.cat(out, dim=0)
    return torch.cat([o[:s] for o, s in zip(out, sizes)], dim=0)  # strip the padding


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, sizes: Tuple[int, ...]) -> Tensor:
        rank = dist.get_rank()
        ctx.start, ctx.stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
        return _all_gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start:ctx.stop], None


def _check(x, i: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"gather expects tensors, argument {i} is {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError(f"gather concatenates along dim 0: argument {i} is a 0-d tensor; use x.view(1)")
    return x


def gather(*tensors: Tensor, return_offset: bool = False):
    """All processes' tensors concatenated along dim 0 in rank order, differentiable.

    Args:
        *tensors: one or more tensors with the same number of rows ``B_r`` on this process (the
            number may differ between processes; the other dims must agree). Row counts are exchanged
            once for all of them. Integer tensors (labels) are gathered without gradients.
        return_offset: also return this process's first row in the result.

    Returns:
        ``gathered`` (one tensor in) or a tuple of them, ``[sum_r B_r, ...]`` each; with
        ``return_offset`` the tuple ``(*gathered, offset)``. Outside a process group the inputs
        themselves and offset ``0``.

    Gradients: see the module docstring (``all_reduce`` of the gathered gradient, local slice kept).
    Equivalent to ``gather_rows(gather_layout(B_r, True), *tensors)``; use those two when the
    caller needs the layout (offsets, slices) or decides with a flag whether to gather.
    """
    if not tensors:
        raise TypeError("gather needs at least one tensor")
    for i, x in enumerate(tensors):
        _check(x, i)
    n = tensors[0].size(0)
    if any(x.size(0) != n for x in tensors):
        raise ValueError(
            "gather: all tensors of one call must have the same number of rows (dim 0), got "
            f"{[x.size(0) for x in tensors]}; gather them in separate calls"
        )
    layout = gather_layout(n, True, tensors[0].device)
    out = gather_rows(layout, *tensors)
    out = out if isinstance(out, tuple) else (out,)
    if return_offset:
        return out + (layout.offset,)
    return out[0] if len(out) == 1 else out


__all__ = ["GatherLayout", "gather_layout", "gather_rows", "gather", "is_distributed", "all_sizes", "local_offset"]
