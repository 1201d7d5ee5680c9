r"""Float32 islands for losses under mixed precision (Lightning ``bf16-mixed`` / ``16-mixed``).

Under ``torch.autocast`` a matrix product returns float16/bfloat16, and a model trained with
``16-true`` hands float16 embeddings to its loss. The losses exponentiate similarities and square
norms: in float16 an inner product of two vectors of norm 256 is already ``65536 > 65504`` (the
largest float16), so the N-pair loss became ``inf`` without an error; in bfloat16 (8 mantissa bits)
``exp(s / t)`` and the sums over a batch lose 2-3 significant digits. :func:`full_precision` runs a
loss's forward with autocast *disabled* and its 16-bit floating inputs cast to float32, which is
what ``torch.autocast`` itself does for the ops on its float32 list (``softmax``, ``log_softmax``,
``cross_entropy``, ``norm``, ``exp``, ...; PyTorch "Automatic Mixed Precision" docs, "CUDA Ops
that can autocast to float32"). The cast is differentiable: gradients flow back into the 16-bit
inputs in their own dtype. The result is a float32 tensor, as autocast's own losses return.

Tolerances (``tests/test_precision.py``, CPU autocast; the embeddings come from a small network run
under autocast, so they are rounded to 16 bits before the loss sees them):

* every loss (InfoNCE, DCL, HCL, UnReMix, N-pair, multi-similarity, triplet, proxy-anchor) is within
  ``rtol=5e-3`` of float32 under ``bf16-mixed`` and ``rtol=1e-3`` under ``16-mixed`` (measured
  worst case over 3 seeds: 6.5e-4 and 1.3e-4);
* GCA-HNG (its GNN's matrix products do run in 16 bits) within ``rtol=2e-2`` (bf16) and ``5e-3``
  (float16) for the generator, node and synthetic-metric losses, the same ``hard`` pairs, and the
  negatives within ``2e-2`` / ``5e-3`` of their largest magnitude;
* fed the same 16-bit values, a loss equals its float32 evaluation on those values to ``1e-6``:
  nothing inside runs in 16 bits (with autocast active inside, the error would be 3e-4 to 4e-3).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, TypeVar

import torch
from torch import Tensor

_HALF = (torch.float16, torch.bfloat16)
F = TypeVar("F", bound=Callable[..., Any])


def to_float32(x: Any) -> Any:
    """``x.float()`` for a float16/bfloat16 tensor; anything else (incl. float64) unchanged."""
    if isinstance(x, Tensor) and x.dtype in _HALF:
        return x.float()
    return x


_DEVICE_TYPES = ("cuda", "cpu", "xpu", "mps")


def _enabled_autocast() -> list:
    out = []
    for device_type in _DEVICE_TYPES:
        try:
            if torch.is_autocast_enabled(device_type):
                out.append(device_type)
        except (RuntimeError, ValueError):  # device type unknown to this build
            continue
    return out


def full_precision(forward: F) -> F:
    """Decorate a ``forward(self, *tensors, ...)``: autocast off, 16-bit float tensor args to float32.

    Float64 and float32 inputs are left as they are (so float64 tests stay float64); non-tensor
    arguments are passed through (a method taking containers must upcast their tensors itself, with
    :func:`to_float32`). Autocast is disabled for every device type on which it is enabled.
    """

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        args = tuple(to_float32(a) for a in args)
        kwargs = {k: to_float32(v) for k, v in kwargs.items()}
        enabled = _enabled_autocast()
        if not enabled:
            return forward(self, *args, **kwargs)
        with contextlib.ExitStack() as stack:
            for device_type in enabled:
                stack.enter_context(torch.autocast(device_type, enabled=False))
            return forward(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


__all__ = ["full_precision", "to_float32"]
