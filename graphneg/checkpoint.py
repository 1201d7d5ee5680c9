"""Run state: atomic checkpoint writes, RNG state for exact resume, and a stop on non-finite losses.

* :class:`AtomicCheckpointIO` wraps any Lightning ``CheckpointIO`` (default ``TorchCheckpointIO``): a
  local checkpoint is written to a uniquely named temporary file in the target folder, ``fsync``-ed and
  renamed onto its name with ``os.replace`` (atomic on POSIX and Windows), so a reader sees the old file or
  the new one, never half of one. Remote paths (any fsspec URL other than ``file://``: ``s3://``,
  ``gs://``, ``memory://``, ...) go to the wrapped writer unchanged (Lightning's fsspec writer).
  :func:`use_atomic_checkpoints` installs it on a Trainer on top of whatever ``trainer.plugins`` set.
* Temporary names are ``.<name>.tmp-<host>-<pid>-<uuid4 hex>``: unique per save, so concurrent saves to
  one path never share a temporary file. A process killed mid-save leaves its temporary file behind;
  :func:`remove_orphaned_temp_files` deletes those whose process (same host, pid no longer running) is
  gone. The writer calls it on each folder before its first save there, the CLI on the folders of earlier
  runs at start-up.
* :class:`RNGStateCallback` saves and restores the global random generators.
* :class:`DetectNaN` stops training with :class:`NonFiniteLossError` (naming epoch, batch index and global
  step) when the training loss is NaN or inf, before any checkpoint of the broken state is written.
"""
from __future__ import annotations

import os
import random
import re
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, List, Optional

import fsspec
import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import AsyncCheckpointIO

_LOCAL_PROTOCOLS = ("file", "local")
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-(?P<token>[0-9a-f]{32})$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _local_path(path: Any) -> Optional[Path]:
    """The local filesystem path of ``path`` (a path or ``file://`` URL); ``None`` for a remote URL."""
    text = os.fspath(path)
    if fsspec.utils.get_protocol(text) not in _LOCAL_PROTOCOLS:
        return None
    if "://" in text:  # file:///a/b -> /a/b
        _, text = fsspec.core.url_to_fs(text)
    return Path(text)


def temp_path_for(path: os.PathLike) -> Path:
    """A fresh temporary name next to ``path``: ``.<name>.tmp-<host>-<pid>-<uuid4 hex>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex}")


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only (POSIX)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_orphaned_temp_files(folder: os.PathLike) -> List[Path]:
    """Delete the temporary checkpoint files in ``folder`` left by processes that died mid-save.

    A file counts as orphaned when its name has the form written by :func:`temp_path_for`, it was written
    on this host and its process id is no longer running. Files of other hosts (a shared filesystem) and
    of running processes are kept. On Windows nothing is removed (no safe process-existence check).

    Returns:
        the removed paths.
    """
    folder = Path(folder)
    if os.name != "posix" or not folder.is_dir():
        return []
    host, removed = _host(), []
    for entry in folder.iterdir():
        m = _TMP_RE.match(entry.name)
        if m is None or m["host"] != host or _pid_running(int(m["pid"])):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except FileNotFoundError:  # removed by a concurrent cleanup
            pass
    return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(write, path: Path) -> None:
    """``write(tmp)`` to a fresh temporary file, fsync it and rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        write(tmp)
        if not tmp.exists():  # the writer wrote nothing on this process (e.g. a non-zero rank)
            return
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_torch_save(obj: Any, path: os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically.

    A local ``path`` is written to a unique temporary file in the same folder, ``fsync``-ed and renamed onto
    ``path`` with ``os.replace``; readers see the old file or the new one, never half. A remote fsspec URL
    (``s3://``, ``memory://``, ...) is serialised in memory and written with one ``fsspec`` write.
    """
    local = _local_path(path)
    if local is None:
        fs, url = fsspec.core.url_to_fs(os.fspath(path))
        parent = url.rsplit("/", 1)[0]
        if parent and parent != url:
            fs.makedirs(parent, exist_ok=True)
        import io

        buf = io.BytesIO()
        torch.save(obj, buf)
        with fs.open(url, "wb") as f:
            f.write(buf.getvalue())
        return

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    _publish(write, local)


class AtomicCheckpointIO(CheckpointIO):
    """Lightning ``CheckpointIO`` that makes another writer's local saves atomic.

    Args:
        checkpoint_io: the writer doing the serialisation (default: Lightning's ``TorchCheckpointIO``).
            Local saves call ``checkpoint_io.save_checkpoint(checkpoint, <temporary path>, storage_options)``
            and then rename the temporary file onto the target (see the module docstring); remote fsspec
            paths are passed to ``checkpoint_io`` unchanged. Loading and removal are delegated.

    Before the first save into a folder, orphaned temporary files of dead processes in that folder are
    removed (:func:`remove_orphaned_temp_files`).
    """

    def __init__(self, checkpoint_io: Optional[CheckpointIO] = None) -> None:
        super().__init__()
        if checkpoint_io is not None and not isinstance(checkpoint_io, CheckpointIO):
            raise TypeError(
                f"AtomicCheckpointIO(checkpoint_io=...) expects a lightning CheckpointIO (e.g. "
                f"TorchCheckpointIO()), got {type(checkpoint_io).__name__}"
            )
        if isinstance(checkpoint_io, AsyncCheckpointIO):
            raise TypeError(
                "AtomicCheckpointIO cannot wrap AsyncCheckpointIO (the rename would run before the background "
                "write ends); wrap the other way round: AsyncCheckpointIO(AtomicCheckpointIO(...))"
            )
        self.checkpoint_io = checkpoint_io if checkpoint_io is not None else TorchCheckpointIO()
        self._cleaned: set = set()

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        local = _local_path(path)
        if local is None:
            self.checkpoint_io.save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        folder = local.parent.resolve()
        if folder not in self._cleaned:
            remove_orphaned_temp_files(folder)
            self._cleaned.add(folder)
        _publish(
            lambda tmp: self.checkpoint_io.save_checkpoint(checkpoint, tmp, storage_options=storage_options), local
        )

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None):
        return self.checkpoint_io.load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path) -> None:
        self.checkpoint_io.remove_checkpoint(path)

    def teardown(self) -> None:
        self.checkpoint_io.teardown()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.checkpoint_io.__class__.__name__})"


def use_atomic_checkpoints(trainer) -> CheckpointIO:
    """Make ``trainer``'s checkpoint writes atomic, keeping the writer that ``trainer.plugins`` chose.

    The strategy's ``checkpoint_io`` is wrapped in :class:`AtomicCheckpointIO` (nothing changes when it
    already is one); an ``AsyncCheckpointIO`` keeps running in the background around an atomic base writer.
    Strategies that write checkpoints themselves (DeepSpeed, sharded FSDP) do not use ``checkpoint_io``
    and are unaffected. Returns the strategy's new ``checkpoint_io``.
    """
    strategy = trainer.strategy
    io = strategy.checkpoint_io
    if isinstance(io, AtomicCheckpointIO):
        return io
    if type(io) is AsyncCheckpointIO:
        base = io.checkpoint_io
        if isinstance(base, AtomicCheckpointIO):
            return io
        io = AsyncCheckpointIO(AtomicCheckpointIO(base))
    else:
        io = AtomicCheckpointIO(io)
    strategy.checkpoint_io = io
    return io


# ------------------------------------------------------------------------------------------ RNG state
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


# ------------------------------------------------------------------------------------------ NaN guard
class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite (raised by :class:`DetectNaN`)."""


class DetectNaN(Callback):
    """Stop training when the training loss is NaN or inf, before a checkpoint of the broken state is written.

    After each training batch the loss (the tensor ``training_step`` returns, or its ``"loss"`` entry) is
    checked on its device without a host sync; the first non-finite batch's epoch, batch index and global
    step are kept on the device. They are read (one sync) every ``check_every_n_steps`` batches, at epoch
    end and before every checkpoint save; a non-finite loss then raises :class:`NonFiniteLossError` naming
    them. Raising inside the save (``on_save_checkpoint`` runs before the file is written) aborts that save,
    so the last checkpoint on disk is the last one written from finite state.

    Args:
        check_every_n_steps: batches between host reads of the flag (1: stop at the bad batch itself).
    """

    def __init__(self, check_every_n_steps: int = 1) -> None:
        super().__init__()
        if isinstance(check_every_n_steps, bool) or not isinstance(check_every_n_steps, int) or check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be a positive int (batches), got {check_every_n_steps!r}")
        self.check_every_n_steps = check_every_n_steps
        self._where: Optional[torch.Tensor] = None  # [epoch, batch_idx, global_step], -1 while all finite
        self._value: Optional[torch.Tensor] = None
        self._seen = 0

    @staticmethod
    def _loss(outputs) -> Optional[torch.Tensor]:
        if isinstance(outputs, torch.Tensor):
            return outputs
        if isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), torch.Tensor):
            return outputs["loss"]
        return None

    def on_train_start(self, trainer, pl_module) -> None:
        self._where, self._value, self._seen = None, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = self._loss(outputs)
        if loss is None:
            return
        loss = loss.detach()
        dev = loss.device
        if self._where is None:
            self._where = torch.full((3,), -1, dtype=torch.long, device=dev)
            self._value = torch.zeros((), dtype=torch.float32, device=dev)
        bad = (~torch.isfinite(loss)).any() & (self._where[0] < 0)
        here = torch.tensor([trainer.current_epoch, batch_idx, trainer.global_step], dtype=torch.long).to(
            dev, non_blocking=True
        )
        self._where = torch.where(bad, here, self._where)
        # nan or +-inf when bad (the sum of the non-finite entries; no boolean indexing, no sync)
        first_bad = torch.where(torch.isfinite(loss), torch.zeros_like(loss), loss).sum()
        self._value = torch.where(bad, first_bad.to(torch.float32), self._value)
        self._seen += 1
        if self._seen % self.check_every_n_steps == 0:
            self.check(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        self.check(trainer)

    def check(self, trainer=None) -> None:
        """Raise :class:`NonFiniteLossError` when a non-finite loss has been seen (one host sync)."""
        if self._where is None:
            return
        epoch, batch_idx, step = (int(v) for v in self._where.tolist())
        if epoch < 0:
            return
        value = float(self._value)
        last = getattr(getattr(trainer, "checkpoint_callback", None), "last_model_path", "") or ""
        kept = f"the last checkpoint ({last}) was written before it" if last else "no checkpoint was written after it"
        raise NonFiniteLossError(
            f"training loss is {value} at epoch {epoch}, batch index {batch_idx} (global step {step}); training "
            f"stopped and {kept}. Check that batch for NaN/inf inputs, lower the learning rate or clip gradients; "
            "to train on regardless, run with --detect_nan false (or remove the DetectNaN callback)"
        )


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
