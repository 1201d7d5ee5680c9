"""Checks of constructor arguments: real hyper-parameters and their ranges, choices among strings,
edge modes, image sizes and normalisation statistics (:mod:`graphneg.validation`). Called once in a
constructor or per call on Python values (0-d CPU tensors accepted); no host sync."""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple

from torch import Tensor

from graphneg.validation.core import check_k

__all__ = [
    "check_hyperparameter", "check_temperature", "check_hcl_beta", "check_tau_plus", "check_choice",
    "check_neighbours", "EDGE_MODES", "check_edge_mode", "check_channel_stats", "check_image_size",
]


def check_hyperparameter(
    value,
    name: str,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    hint: str = "",
    owner: str = "",
) -> float:
    """Return a real hyper-parameter as a ``float`` if it is finite and inside its range.

    ``bool``, strings and non-numbers raise ``TypeError``; NaN, +-Inf and values outside
    ``[minimum, maximum]`` (open ends with ``min_inclusive`` / ``max_inclusive`` ``False``) raise
    ``ValueError``: ``"<owner>: <name> must be a finite number <range>, got <value>; <hint>"``. Called
    once in a constructor, never on a hot path (no tensors involved). The one range check of the
    package (losses, samplers, augmentations, probes).
    """
    who = f"{owner}: {name}" if owner else name
    if isinstance(value, Tensor) and value.dim() == 0 and value.is_floating_point() and value.device.type == "cpu":
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who} must be a real number, got {value!r} ({type(value).__name__})"
                        + (f"; {hint}" if hint else ""))
    v = float(value)
    lo_ok = minimum is not None and minimum != float("-inf")
    hi_ok = maximum is not None and maximum != float("inf")
    if lo_ok and hi_ok:
        where = f" in {'[' if min_inclusive else '('}{minimum:g}, {maximum:g}{']' if max_inclusive else ')'}"
    elif lo_ok:
        where = f" {'>=' if min_inclusive else '>'} {minimum:g}"
    elif hi_ok:
        where = f" {'<=' if max_inclusive else '<'} {maximum:g}"
    else:
        where = ""
    bad = not math.isfinite(v)
    if minimum is not None:
        bad = bad or (v < minimum if min_inclusive else v <= minimum)
    if maximum is not None:
        bad = bad or (v > maximum if max_inclusive else v >= maximum)
    if bad:
        raise ValueError(f"{who} must be a finite number{where}, got {value!r}" + (f"; {hint}" if hint else ""))
    return v


def check_temperature(temperature, owner: str = "") -> float:
    """A softmax temperature ``> 0`` (it divides the cosine similarities)."""
    return check_hyperparameter(temperature, "temperature", 0.0, min_inclusive=False, owner=owner,
                                hint="it divides the cosine similarities; typical values are 0.05 to 1.0")


def check_hcl_beta(beta, owner: str = "") -> float:
    """The hardness concentration ``beta >= 0`` of HCL (Robinson et al., ICLR 2021, Eq. 5) and UnReMix."""
    return check_hyperparameter(beta, "beta", 0.0, owner=owner, hint="the HCL concentration; beta=0 gives "
                                "uniform importance (DCL), larger values favour harder negatives")


def check_tau_plus(tau_plus, owner: str = "") -> float:
    """The class prior of false negatives ``tau_plus`` in ``[0, 1)`` (Chuang et al., NeurIPS 2020, Eq. 6)."""
    return check_hyperparameter(tau_plus, "tau_plus", 0.0, 1.0, max_inclusive=False, owner=owner,
                                hint="the class prior of false negatives; use 0 for no debiasing, typical "
                                "values are 0.01 to 0.1")


def check_choice(name: str, value, choices: Sequence[str], ignore_case: bool = False) -> str:
    """Return ``value`` if it is one of the strings ``choices`` (lower-cased first with ``ignore_case``);
    else a ``ValueError`` listing them."""
    key = value.lower() if ignore_case and isinstance(value, str) else value
    if not isinstance(key, str) or key not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return key


def check_neighbours(k) -> Optional[int]:
    """``k`` (neighbours per node of the batch kNN graph of UnReMix's representativeness) as an ``int``,
    or ``None`` (all other candidates): :func:`check_k` with ``optional=True``."""
    return check_k(k, "k (neighbours per node of the batch kNN graph)", optional=True)


#: Edge modes of the batch graph (:func:`graphneg.graph.batch_graph`, :class:`graphneg.nn.GCAHNG`).
EDGE_MODES = ("complete", "knn", "negative", "positive", "knn_negative")


def check_edge_mode(edges: str, k: Optional[int]) -> None:
    """Raise a clear ``ValueError`` unless ``edges`` is one of :data:`EDGE_MODES` and ``k`` fits it.

    The kNN modes need a positive integer ``k``; the other modes take no ``k``. Shared by
    :func:`batch_graph` and :class:`graphneg.nn.GCAHNG` (one list of modes, one rule).
    """
    if edges not in EDGE_MODES:
        raise ValueError(f"edges must be one of {EDGE_MODES}, got {edges!r}")
    knn = edges in ("knn", "knn_negative")
    if knn and k is None:
        raise ValueError(f"edges={edges!r} needs a positive integer k (neighbours per node), got None")
    if knn:  # 2.7 or True raise (TypeError) instead of becoming 2 or 1; k < 1 raises ValueError
        check_k(k, f"k (neighbours per node) for edges={edges!r}")
    if not knn and k is not None:
        raise ValueError(
            f"k is only used with edges='knn' or edges='knn_negative', not edges={edges!r}; "
            "drop k or choose a kNN mode"
        )


def check_channel_stats(mean: Sequence[float], std: Sequence[float]) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel normalisation statistics: equal non-empty lengths, ``std > 0``."""
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) == 0 or len(mean) != len(std):
        raise ValueError(
            f"mean and std need one value per channel and the same length, got mean={mean}, std={std}"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive per channel, got {std}")
    return mean, std


def check_image_size(size) -> Tuple[int, int]:
    """An image size: a positive int (square) or a pair ``(height, width)`` of them."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    size = tuple(size)
    if len(size) != 2 or any((not isinstance(s, int)) or s < 1 for s in size):
        raise ValueError(f"size must be a positive int or a pair (height, width) of them, got {size!r}")
    return size
