"""RNG state in checkpoints, for a resumed run that continues the same random streams.

:class:`RNGStateCallback` saves the global random generators (Python, NumPy, torch CPU and CUDA) and those
of the training DataLoader (its own, its samplers', its dataset's augmentations) in each checkpoint and
restores them on resume.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Dict, Optional

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def _np_state_to_plain(state):
    name, keys, pos, has_gauss, cached = state
    return (str(name), keys.tolist(), int(pos), int(has_gauss), float(cached))


_WALK_MODULES = ("graphneg", "torch_geometric.transforms", "torchvision.transforms", "torch.utils.data")


def _find_generators(obj, path: str, out: Dict[str, torch.Generator], seen: set, depth: int = 0) -> None:
    """Collect the ``torch.Generator`` objects reachable from ``obj`` through attributes of objects defined
    in :data:`_WALK_MODULES` (samplers, datasets' transforms, augmentations) and lists / tuples / dicts,
    keyed by their attribute path (a stable name across processes)."""
    if depth > 8 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Generator):
        out[path] = obj
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _find_generators(v, f"{path}[{i}]", out, seen, depth + 1)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str):
                _find_generators(v, f"{path}[{k}]", out, seen, depth + 1)
        return
    if not type(obj).__module__.startswith(_WALK_MODULES) or not hasattr(obj, "__dict__"):
        return
    for name, value in vars(obj).items():
        if isinstance(value, (torch.Tensor, np.ndarray)) or name in ("_data", "data", "slices", "_indices"):
            continue
        _find_generators(value, f"{path}.{name}" if path else name, out, seen, depth + 1)


def _loader_generators(trainer) -> Dict[str, torch.Generator]:
    """The random generators of the trainer's training DataLoader(s) (see :func:`_generators_of`)."""
    return _generators_of(getattr(trainer, "train_dataloader", None))


def _generators_of(loaders) -> Dict[str, torch.Generator]:
    """The random generators of training DataLoader(s): the loader's and its samplers' generators and
    those of the augmentations inside the dataset (e.g. graph augmentations with own streams)."""
    if loaders is None:
        return {}
    if isinstance(loaders, Mapping):
        items = list(loaders.items())
    elif isinstance(loaders, (list, tuple)):
        items = list(enumerate(loaders))
    else:
        items = [("", loaders)]
    out: Dict[str, torch.Generator] = {}
    seen: set = set()
    for key, loader in items:
        prefix = f"[{key}]." if key != "" else ""
        for part in ("generator", "sampler", "batch_sampler"):
            _find_generators(getattr(loader, part, None), f"{prefix}{part}", out, seen)
        # datasets (any library's) are entered through their transforms only, never their data
        dataset, path = getattr(loader, "dataset", None), f"{prefix}dataset"
        for _ in range(4):  # Subset / wrapper chains
            if dataset is None:
                break
            for attr in ("transform", "transforms", "views", "generator"):
                _find_generators(getattr(dataset, attr, None), f"{path}.{attr}", out, seen)
            dataset, path = getattr(dataset, "dataset", None), f"{path}.dataset"
    return out


class RNGStateCallback(Callback):
    """Saves the random number generators in each checkpoint and restores them on resume, so that random
    augmentations and random draws continue the same stream and a resumed run's next step matches the
    uninterrupted run bit for bit (on the same device):

    * the global generators (Python, NumPy, torch CPU and CUDA);
    * the training DataLoader's own generators: ``DataLoader(generator=...)`` (it draws each epoch's
      shuffle and worker seeds), its samplers', and those of augmentations inside its dataset that own a
      stream (``graphneg.data.graph_augment``). A DataModule builds these afresh when the resumed run
      asks for its loader, so without this the resumed epoch would repeat the first epoch's order and
      augmentations. They are applied to the loader the DataModule's ``train_dataloader()`` returns in the
      resumed run, before its first iterator (loaders passed to ``fit`` directly: at ``on_train_start``,
      after Lightning has created the first iterator, so not exact). Exact for checkpoints taken at epoch
      ends (Lightning's default).
    """

    def __init__(self) -> None:
        super().__init__()
        self._trainer = None
        self._pending_loader_state: Optional[Dict[str, torch.Tensor]] = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> Dict[str, Any]:
        state = {
            "python": random.getstate(),
            # plain types only, so checkpoints load with torch.load(weights_only=True)
            "numpy": _np_state_to_plain(np.random.get_state()),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if self._trainer is not None:
            state["train_loader"] = {k: g.get_state() for k, g in _loader_generators(self._trainer).items()}
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        pending = state_dict.get("train_loader")
        if pending:
            self._restore_loader_state(pending)

    @staticmethod
    def _apply(loaders, pending: Dict[str, torch.Tensor]) -> None:
        current = _generators_of(loaders)
        for key, state in pending.items():
            if key in current:
                current[key].set_state(state)

    def _restore_loader_state(self, pending: Dict[str, torch.Tensor]) -> None:
        # Lightning restores callbacks before it asks the DataModule for the training loader, and creates
        # the first epoch's iterator right after (no hook in between): the states are applied to the loader
        # as the DataModule's train_dataloader() returns it (a one-shot wrapper on this DataModule instance)
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if dm is None or not callable(getattr(dm, "train_dataloader", None)):
            self._pending_loader_state = pending  # loaders given to fit(): applied at on_train_start
            return
        original = dm.train_dataloader

        def train_dataloader():
            dm.__dict__.pop("train_dataloader", None)  # back to the class's method
            loaders = original()
            self._apply(loaders, pending)
            return loaders

        dm.train_dataloader = train_dataloader

    def on_train_start(self, trainer, pl_module) -> None:
        pending, self._pending_loader_state = self._pending_loader_state, None
        if pending:
            self._apply(trainer.train_dataloader, pending)


__all__ = ["RNGStateCallback"]
