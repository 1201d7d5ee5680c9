"""Run state: atomic checkpoint writes, RNG state for exact resume, and a stop on non-finite losses.

One module per idea, every name importable from ``graphneg.checkpoint``:

* :mod:`graphneg.checkpoint.atomic`: :class:`AtomicCheckpointIO` (a Lightning ``CheckpointIO`` whose local
  saves go to a unique temporary file, ``fsync``-ed and renamed onto the target), :func:`use_atomic_checkpoints`,
  :func:`atomic_torch_save`, :func:`temp_path_for`, :func:`remove_orphaned_temp_files`;
* :mod:`graphneg.checkpoint.rng_state`: :class:`RNGStateCallback` saves and restores the global random
  generators and the training DataLoader's;
* :mod:`graphneg.checkpoint.nan_guard`: :class:`DetectNaN` stops training with :class:`NonFiniteLossError`
  (naming epoch, batch index and global step) when the training loss is NaN or inf, before any checkpoint
  of the broken state is written.
"""
from graphneg.checkpoint.atomic import (
    AtomicCheckpointIO,
    atomic_torch_save,
    remove_orphaned_temp_files,
    temp_path_for,
    use_atomic_checkpoints,
)
from graphneg.checkpoint.nan_guard import DetectNaN, NonFiniteLossError
from graphneg.checkpoint.rng_state import RNGStateCallback

__all__ = [
    "AtomicCheckpointIO",
    "DetectNaN",
    "NonFiniteLossError",
    "RNGStateCallback",
    "atomic_torch_save",
    "remove_orphaned_temp_files",
    "temp_path_for",
    "use_atomic_checkpoints",
]
