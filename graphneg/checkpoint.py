"""Atomic checkpoint writing: a crash mid-save never leaves a truncated checkpoint behind."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
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




def _np_state_to_plain(state):
    name, keys, pos, has_gauss, cached = state
    return (str(name), keys.tolist(), int(pos), int(has_gauss), float(cached))


class RNGStateCallback(Callback):
    """Saves the global random number generators (Python, NumPy, torch CPU and CUDA) in each checkpoint
    and restores them on resume, so that random augmentations and random draws continue the same stream
    and a resumed run's next step matches the uninterrupted run bit for bit (on the same device)."""

    def state_dict(self) -> Dict[str, Any]:
        state = {
            "python": random.getstate(),
            # plain types only, so checkpoints load with torch.load(weights_only=True)
            "numpy": _np_state_to_plain(np.random.get_state()),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


__all__ = ["AtomicCheckpointIO", "RNGStateCallback", "atomic_torch_save"]
