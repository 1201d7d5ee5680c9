"""The value-check switch and the checks of embeddings, labels, batches and integer sizes
(:mod:`graphneg.validation`)."""
from __future__ import annotations

import contextlib
import numbers
from typing import Iterable, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "value_checks_enabled", "set_value_checks", "value_checks",
    "check_embeddings", "check_same_width", "check_not_meta", "check_dtype_matches", "check_labels",
    "check_multiclass", "check_batch", "check_k", "check_ks",
]

_VALUE_CHECKS = True


def value_checks_enabled() -> bool:
    """Whether building blocks run their value checks (NaN, label ranges); on by default."""
    return _VALUE_CHECKS


def set_value_checks(enabled: bool) -> bool:
    """Turn the building blocks' value checks on or off; returns the previous setting.

    Structure checks (types, shapes, dtypes) always run. Prefer the context manager
    :func:`value_checks`, which restores the previous setting.
    """
    global _VALUE_CHECKS
    if not isinstance(enabled, bool):
        raise TypeError(f"set_value_checks expects True or False, got {enabled!r}")
    previous, _VALUE_CHECKS = _VALUE_CHECKS, enabled
    return previous


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Context manager: ``with value_checks(False): ...`` runs the block without value checks
    (no host sync from validation), restoring the previous setting afterwards, also on errors."""
    previous = set_value_checks(enabled)
    try:
        yield
    finally:
        set_value_checks(previous)


def _run_values(values: Optional[bool]) -> bool:
    return _VALUE_CHECKS if values is None else bool(values)


def _is_int_dtype(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


_NAN_HINT = ("check the learning rate, the input data and the normalisation "
             "(torch.autograd.set_detect_anomaly(True) helps to find the source)")


def check_not_meta(x: Tensor, name: str = "input") -> None:
    """Raise ``ValueError`` for a ``meta`` tensor (shape and dtype only, no values): graphneg computes on
    values, and torch's own error on such a tensor ("Tensor.item() cannot be called on meta tensors")
    does not say which input was meant. A structure check (free, always runs)."""
    if isinstance(x, Tensor) and x.is_meta:
        raise ValueError(
            f"{name} is a 'meta' tensor (shape {tuple(x.shape)}, no values): graphneg's losses, generator and "
            "metrics need data; create it on a real device ('cpu' / 'cuda'), e.g. a module built under "
            "torch.device('meta') needs module.to_empty(device=...) and its weights loaded first"
        )


def check_dtype_matches(x: Tensor, dtype: torch.dtype, name: str = "embeddings", owner: str = "the module") -> None:
    """Raise ``ValueError`` when ``x`` is a wider floating type than ``dtype`` (the parameters of the module
    it enters), e.g. float64 embeddings into a float32 generator: torch would fail inside a matrix
    product with "mat1 and mat2 must have the same dtype". 16-bit inputs pass (modules upcast them)."""
    if x.is_floating_point() and dtype.is_floating_point and x.dtype.itemsize > dtype.itemsize:
        raise ValueError(
            f"{name} have dtype {x.dtype} but {owner}'s parameters are {dtype}; pass {name}.float() (or "
            f"convert {owner} with .double() to compute in float64)"
        )


def check_embeddings(x: Tensor, name: str = "embeddings", values: Optional[bool] = None,
                     dtype: Optional[torch.dtype] = None, owner: str = "the module") -> None:
    """Raise unless ``x`` is a floating ``[B, D]`` tensor with values (not ``meta``) and, with value
    checks, finite. With ``dtype`` (the parameters' dtype of ``owner``, the module ``x`` enters) a wider
    floating type is refused too (:func:`check_dtype_matches`).

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: wrong number of dimensions, non-floating dtype, a meta tensor, a dtype wider than
            ``dtype``, or (values) NaN / Inf entries.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, D], got {type(x).__name__}")
    check_not_meta(x, name)
    if x.dim() != 2:
        raise ValueError(
            f"{name} must have shape [B, D] (one row per sample), got shape {tuple(x.shape)}; "
            "flatten the encoder output with x.flatten(1) first"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}; convert with x.float()")
    if dtype is not None:
        check_dtype_matches(x, dtype, name, owner)
    if _run_values(values) and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contain NaN or Inf values; {_NAN_HINT}")


def check_labels(
    labels,
    num: int,
    name: str = "labels",
    values: Optional[bool] = None,
    num_classes: Optional[int] = None,
) -> Tensor:
    """Validate class ids and return them as a tensor of shape ``[num]``.

    ``labels`` may be a tensor, a NumPy array or a list; a ``[num, 1]`` column is flattened.
    The dtype must be an integer type: ``bool`` (a mask, not class ids) and floating dtypes are
    rejected. With ``num_classes`` and value checks on, every id must lie in ``[0, num_classes)``.

    Raises:
        TypeError: bool or floating labels.
        ValueError: wrong shape, or (values) ids outside ``[0, num_classes)``.
    """
    if not isinstance(labels, Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"{name} must be integer class ids (a LongTensor of shape [{num}]), got "
                f"{type(labels).__name__} that torch.as_tensor cannot convert: {err}"
            ) from err
    check_not_meta(labels, name)
    labels = labels.reshape(-1) if labels.dim() == 2 and labels.size(-1) == 1 else labels
    if labels.dtype == torch.bool:
        raise TypeError(
            f"{name} must be integer class ids, got a bool tensor; a boolean mask is not a class id: "
            f"pass labels.long() if True/False really are the two classes"
        )
    if not _is_int_dtype(labels.dtype):
        raise TypeError(
            f"{name} must be integer class ids, got dtype {labels.dtype}; pass a LongTensor "
            f"(labels.long() after checking that the values are whole numbers)"
        )
    if labels.dim() != 1 or labels.numel() != num:
        raise ValueError(
            f"{name} must be a vector with one entry per sample: expected shape [{num}], "
            f"got {tuple(labels.shape)}"
        )
    if num_classes is not None and _run_values(values) and labels.numel():
        if bool(((labels < 0) | (labels >= num_classes)).any()):
            raise ValueError(
                f"{name} must lie in [0, num_classes={num_classes}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]; remap the class ids to 0..C-1 or "
                "raise num_classes"
            )
    return labels


def check_same_width(x: Tensor, ref: Tensor, name: str, ref_name: str = "embeddings") -> None:
    """``x`` checked as embeddings ``[M, D]`` (:func:`check_embeddings`) with the embedding size ``D`` of
    ``ref`` (already checked): a ``ValueError`` naming both otherwise. For the second set of rows of a
    loss or sampler (references, extra or synthetic negatives, candidates)."""
    check_embeddings(x, name)
    if x.size(1) != ref.size(1):
        raise ValueError(
            f"{name} must have the embedding size (dimension D={ref.size(1)}) of {ref_name}, got shape "
            f"{tuple(x.shape)}"
        )


def check_multiclass(labels: Tensor, what: str = "this batch", values: Optional[bool] = None) -> None:
    """Raise unless at least two distinct classes are present (negatives need another class).

    A value check (it reads the labels): skipped when value checks are off.
    """
    if not _run_values(values):
        return
    if labels.numel() == 0 or bool((labels == labels[0]).all()):
        raise ValueError(
            f"{what} holds a single class ({labels[:1].tolist()}): negatives need samples of at least "
            "two classes; use graphneg.data.MPerClassBatchSampler (classes_per_batch >= 2) to build batches"
        )


def check_batch(
    embeddings: Tensor,
    labels=None,
    num_classes: Optional[int] = None,
    name: str = "embeddings",
    what: str = "this training batch",
    need_positive: bool = False,
    others: Sequence[Tuple[str, Tensor]] = (),
) -> Optional[Tensor]:
    """All checks of a training batch with **one** host sync, for a module boundary.

    Structure as :func:`check_embeddings` / :func:`check_labels`. Values: finite ``embeddings``
    (and finite ``others``, ``(name, tensor)`` pairs such as a second view); with ``labels``: at
    least two classes, ids in ``[0, num_classes)`` (when given) and, with ``need_positive``, some
    class with two or more samples (pair-based losses need a positive). Always checks values,
    whatever the switch says; the errors are those of the single checks. Returns the labels (on
    the embeddings' device), or ``None`` without labels.
    """
    check_embeddings(embeddings, name, values=False)
    for other_name, other in others:
        check_embeddings(other, other_name, values=False)
    flags = [torch.isfinite(embeddings).all()] + [torch.isfinite(o).all() for _, o in others]
    n_finite = len(flags)
    if labels is not None:
        labels = check_labels(labels, embeddings.size(0), "batch labels", values=False)
        labels = labels.to(embeddings.device)
        if labels.numel() == 0:
            raise ValueError(f"{what} is empty")
        flags.append((labels != labels[0]).any())
        if num_classes is not None:
            flags.append(((labels >= 0) & (labels < num_classes)).all())
        if need_positive:
            flags.append((torch.sort(labels).values.diff() == 0).any())
    ok = torch.stack(flags).tolist()  # the one host sync
    for (bad_name, _), good in zip([(name, embeddings), *others], ok[:n_finite]):
        if not good:
            raise ValueError(f"{bad_name} contain NaN or Inf values; {_NAN_HINT}")
    if labels is None:
        return None
    ok = ok[n_finite:]
    if not ok[0]:
        check_multiclass(labels, what, values=True)
    if num_classes is not None and not ok[1]:
        check_labels(labels, labels.numel(), "batch labels", values=True, num_classes=num_classes)
    if need_positive and not ok[-1]:
        raise ValueError(
            f"no sample of {what} has a positive (every class appears once): pair-based losses need "
            "at least two samples of some class; use an m-per-class sampler with m >= 2 "
            "(e.g. graphneg.data.MPerClassBatchSampler)"
        )
    return labels


def check_k(k, name: str = "k", minimum: int = 1, optional: bool = False) -> Optional[int]:
    """Return ``k`` as an ``int`` if it is an integer ``>= minimum``.

    Python and NumPy integers (and integer 0-d tensors) pass; ``bool``, floats (``2.7``, and also
    ``2.0``), strings and ``None`` raise, so a fractional ``k`` is never truncated silently. With
    ``optional``, ``None`` passes and is returned (e.g. "all neighbours").

    Raises:
        TypeError: ``k`` is not an integer.
        ValueError: ``k < minimum``.
    """
    if optional and k is None:
        return None
    if isinstance(k, Tensor) and k.dim() == 0 and _is_int_dtype(k.dtype):
        k = int(k)
    what = ("a positive integer" if minimum == 1 else f"an integer >= {minimum}") + (" or None" if optional else "")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(
            f"{name} must be {what}, got {k!r} ({type(k).__name__}); a fractional or boolean value "
            f"is not truncated: pass a whole number such as {max(minimum, 1)}"
        )
    if k < minimum:
        raise ValueError(f"{name} must be {what}, got {k!r}")
    return int(k)


def check_ks(ks: Union[int, Iterable[int]], name: str = "ks") -> Tuple[int, ...]:
    """Return the Recall@K cut-offs as a sorted tuple of distinct positive ints.

    ``ks`` is one integer or an iterable of integers (``(1, 2, 4, 8)``); each is checked by
    :func:`check_k`, so ``ks=1.9`` or ``ks=(1, 2.5)`` raise instead of reporting recall@1 / @2.
    """
    if isinstance(ks, (str, bytes)):
        raise TypeError(f"{name} must be integers such as (1, 2, 4, 8), got the string {ks!r}")
    if isinstance(ks, numbers.Number) or isinstance(ks, Tensor) and ks.dim() == 0:
        items: Sequence = [ks]
    else:
        try:
            items = list(ks)
        except TypeError as err:
            raise TypeError(
                f"{name} must be an integer or a sequence of integers such as (1, 2, 4, 8), got "
                f"{ks!r} ({type(ks).__name__})"
            ) from err
    if not items:
        raise ValueError(f"{name} is empty; pass at least one K, e.g. {name}=(1, 2, 4, 8)")
    return tuple(sorted({check_k(k, f"each entry of {name}") for k in items}))
