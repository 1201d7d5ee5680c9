"""Atomic checkpoint writing: a crash mid-save never leaves a truncated checkpoint behind."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, ``fsync`` it, then ``os.replace`` it onto
    ``path`` (an atomic rename on POSIX and Windows): readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` plugin writing checkpoints with :func:`atomic_torch_save`."""

    def save_checkpoint(
        self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                f"{self.__class__.__name__}.save_checkpoint got storage_options={storage_options!r}, "
                "which it does not support"
            )
        atomic_torch_save(checkpoint, path)


__all__ = ["AtomicCheckpointIO", "atomic_torch_save"]
