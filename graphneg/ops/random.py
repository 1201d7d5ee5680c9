"""Counter-based uniform draws (ground floor): a random number as a pure function of ``(seed, counters)``.

Why: a draw ``u[r, t]`` read from ``torch.rand(R, T)`` depends on the table's shape, and a data-dependent
shape needs the host (a CUDA sync) and changes every value when the shape changes. A counter-based draw
(Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; JAX's ``threefry``) is a hash of
the seed and the draw's coordinates, so any subset of draws is computed in place, on any device, with no
table and no host sync, and the draw ``(r, t)`` is the same whatever else is drawn. The seed itself
comes from a ``torch.Generator`` (one ``randint`` per call), so ``torch.manual_seed`` / Lightning's
``seed_everything`` and saved generator states keep runs reproducible.

The hash is ``lowbias32`` (C. Wellons, "Prospecting for hash functions", 2018, hash-prospector:
``x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16``, an invertible 32-bit
mixer with a measured avalanche bias of 0.17), chained over the seed and the low and high 32-bit
words of each counter (each step ``h = lowbias32((h ^ word) + 0x9E3779B9)``). Arithmetic is in int64 on
values below ``2**32``, each 32-bit product split into 16-bit halves so that nothing overflows (torch does
not define signed overflow).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["counter_uniform", "draw_seed", "lowbias32"]

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mul32(x: Tensor, c: int) -> Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in ``[0, 2**32)`` without int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def lowbias32(x: Tensor) -> Tensor:
    """Wellons' ``lowbias32`` on int64 values in ``[0, 2**32)`` (elementwise, same shape, int64)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _absorb(h, word) -> Tensor:
    """One chaining step: ``lowbias32((h ^ word) + 0x9E3779B9)`` (the golden-ratio constant keeps 0, the
    hash's fixed point, out of the chain)."""
    return lowbias32(((h ^ word) + _GOLDEN) & _MASK32)


def draw_seed(generator: Optional[torch.Generator] = None, device=None) -> Tensor:
    """One 32-bit seed as a 0-d int64 tensor on ``device``, drawn from ``generator`` (or the global generator
    of ``device``'s type): a device tensor, so no host sync. A CPU generator's seed is copied to the device
    with ``non_blocking=True`` (a blocking host-to-device copy would synchronise the stream)."""
    device = torch.device("cpu") if device is None else torch.device(device)
    gen_device = generator.device if generator is not None else device
    seed = torch.randint(0, 2 ** 32, (), generator=generator, device=gen_device, dtype=torch.int64)
    return seed.to(device, non_blocking=True)


def counter_uniform(seed: Tensor, *counters: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform draws in ``(0, 1)``, one per element of the broadcast ``counters``, as a function of
    ``(seed, counters)`` only (see the module docstring).

    Args:
        seed: 0-d (or broadcastable) int64 tensor, e.g. :func:`draw_seed`.
        counters: integer tensors ``>= 0`` (any shape, broadcast together), the coordinates of each draw.
        dtype: float dtype of the result.

    Returns:
        ``((h >> 8) + 0.5) / 2**24`` with ``h`` the chained hash: 24 random bits, exact in float32, never
        0 or 1 (so ``log u`` is finite).
    """
    h = _absorb(seed.to(torch.int64), 0)
    for c in counters:
        c = c.to(torch.int64)
        h = _absorb(_absorb(h, c & _MASK32), (c >> 32) & _MASK32)
    return ((h >> 8).to(dtype) + 0.5) * (2.0 ** -24)
