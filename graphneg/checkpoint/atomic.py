"""Atomic checkpoint writes: a reader sees the old file or the new one, never half of one.

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
* :func:`atomic_torch_save` is ``torch.save`` with the same guarantee.
"""
from __future__ import annotations

import os
import re
import socket
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import fsspec
import torch
from lightning.fabric.plugins import CheckpointIO, TorchCheckpointIO
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


__all__ = [
    "AtomicCheckpointIO",
    "atomic_torch_save",
    "remove_orphaned_temp_files",
    "temp_path_for",
    "use_atomic_checkpoints",
]
