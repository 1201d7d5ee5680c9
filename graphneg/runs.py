"""Run folders and the checkpoints in them: a version folder claimed atomically, and checkpoints read
without running code from them.

* :func:`claim_version_dir` creates ``<root>/version_<N>`` with ``os.mkdir`` for the next free ``N``
  (retrying on ``FileExistsError``), so runs started at the same moment (a seed sweep) each get their own
  folder: ``mkdir`` either creates the folder or fails, for exactly one of the racing processes.
* :func:`inspect_checkpoint` reads a checkpoint's ``global_step`` with ``torch.load(weights_only=True)``
  (nothing in the file is executed) and says in words why a file is not a usable checkpoint (empty,
  truncated, not a torch file, not a Lightning checkpoint).
* :func:`newest_checkpoint` picks what ``graphneg fit --ckpt_path last`` resumes: among the run folders,
  newest first, the first that holds a checkpoint that loads; in it, the checkpoint with the highest
  global step (``last.ckpt`` on a tie). Corrupt files and runs without a checkpoint are skipped, with the
  reason.
* :func:`claim_logger_versions` gives a Trainer's loggers their claimed folders: each
  ``TensorBoardLogger`` / ``CSVLogger`` without a fixed version is built again with ``version=N`` through
  its public constructor and put in ``trainer.loggers``.
"""
from __future__ import annotations

import inspect
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

__all__ = ["claim_version_dir", "version_number", "inspect_checkpoint", "CheckpointChoice",
           "newest_checkpoint", "checkpoint_folders", "choose_last_checkpoint", "find_last_checkpoint",
           "check_ckpt_path", "LAST_NAME", "VERSIONED_LOGGERS", "logger_rebuild_arguments", "claim_logger_versions"]

LAST_NAME = "last.ckpt"
_VERSION_RE = re.compile(r"version_(\d+)")


def version_number(path: os.PathLike) -> Optional[int]:
    """``N`` for a folder named ``version_N``, else ``None``."""
    m = _VERSION_RE.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


def claim_version_dir(root: os.PathLike, attempts: int = 10_000) -> Tuple[int, Path]:
    """Create and return ``(N, <root>/version_N)`` for the smallest ``N`` above every existing version.

    The folder is created with ``os.mkdir``, which fails with ``FileExistsError`` for all but one of
    several processes racing for the same name; a loser moves on to the next number. So each caller gets
    a folder no other caller got, before it writes anything. ``root`` is created when missing.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    existing = [n for p in root.iterdir() if (n := version_number(p)) is not None]
    n = max(existing) + 1 if existing else 0
    for _ in range(attempts):
        path = root / f"version_{n}"
        try:
            os.mkdir(path)
        except FileExistsError:
            n += 1
            continue
        return n, path
    raise RuntimeError(f"could not claim a version folder under {root} after {attempts} attempts")


def inspect_checkpoint(path: os.PathLike) -> Tuple[Optional[int], Optional[str]]:
    """``(global_step, None)`` for a Lightning checkpoint that loads with ``torch.load(weights_only=True)``,
    else ``(None, why)`` with the reason in words. Nothing in the file is executed."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None, "the file does not exist"
    if size == 0:
        return None, "the file is empty (0 bytes)"
    if not zipfile.is_zipfile(path):
        return None, (f"not a checkpoint written by torch.save / Lightning ({size} bytes, not a torch zip "
                      "archive; a copy cut short or another kind of file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()
        detail = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[-1] if first
                      else "")
        return None, ("it holds Python objects other than tensors and plain containers, which graphneg does not "
                      f"unpickle ({detail.strip()[:160]})")
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        return None, f"the file is truncated or corrupt ({type(err).__name__}: {str(err).strip()[:160]})"
    if not isinstance(ckpt, dict) or "global_step" not in ckpt or "state_dict" not in ckpt:
        keys = sorted(map(str, ckpt))[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        return None, (f"a torch file but not a Lightning checkpoint (no 'global_step' / 'state_dict'; holds "
                      f"{keys})")
    return int(ckpt["global_step"]), None


@dataclass
class CheckpointChoice:
    """The result of :func:`newest_checkpoint`: the chosen ``path`` and its ``global_step``, the
    ``skipped`` files / folders newer than it with the reason, and a one-line ``message``."""

    path: Path
    global_step: int
    skipped: List[Tuple[Path, str]] = field(default_factory=list)

    @property
    def message(self) -> str:
        text = f"resuming from {self.path} (global step {self.global_step}, the newest checkpoint that loads)"
        if self.skipped:
            text += "; skipped " + "; ".join(f"{p}: {why}" for p, why in self.skipped)
        return text


def newest_checkpoint(folders: Sequence[os.PathLike]) -> Optional[CheckpointChoice]:
    """The checkpoint ``--ckpt_path last`` resumes, or ``None`` when no folder holds one that loads.

    ``folders`` are searched in order (newest run first); the first folder with a checkpoint that loads
    (:func:`inspect_checkpoint`) wins, and in it the file with the highest global step (``last.ckpt`` on a
    tie, then the newest file). A corrupt ``last.ckpt`` beside an intact ``epoch=N`` file, or a missing
    ``last.ckpt``, therefore resumes the intact file; folders without a usable checkpoint are skipped.
    """
    skipped: List[Tuple[Path, str]] = []
    for folder in map(Path, folders):
        files = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
        good = []
        for f in files:
            step, why = inspect_checkpoint(f)
            if why is not None:
                skipped.append((f, why))
            else:
                good.append((step, f.name == LAST_NAME, f.stat().st_mtime, f))
        if good:
            step, _, _, path = max(good, key=lambda t: t[:3])
            if not (folder / LAST_NAME).exists():
                skipped.append((folder / LAST_NAME, "missing"))
            return CheckpointChoice(path, step, skipped)
        if not files:
            skipped.append((folder, "no checkpoint"))
    return None


# ------------------------------------------------------------------ the CLI's choices (graphneg.cli)
def checkpoint_folders(trainer) -> tuple:
    """``(explicit ModelCheckpoint folders, versioned run folders' checkpoint folders (newest first),
    the folder searched)`` for ``trainer``."""
    explicit = []
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath is not None:
            explicit.append(Path(cb.dirpath))
    logger = trainer.logger
    root = getattr(logger, "root_dir", None) if logger is not None else None
    if logger is None or root is None:
        return explicit, [Path(trainer.default_root_dir) / "checkpoints"], Path(trainer.default_root_dir)
    root = Path(root)
    runs = sorted(
        ((n, p) for p in (root.iterdir() if root.is_dir() else ()) if (n := version_number(p)) is not None),
        reverse=True,
    )
    return explicit, [p / "checkpoints" for _, p in runs], root


def choose_last_checkpoint(trainer) -> CheckpointChoice:
    """What ``--ckpt_path last`` resumes: the newest checkpoint (by global step) of the latest run that has
    one that loads (:func:`graphneg.runs.newest_checkpoint`), with the files and runs skipped and why.

    Raises:
        FileNotFoundError: no earlier run has a checkpoint that loads.
    """
    explicit, versioned, root = checkpoint_folders(trainer)
    folders = explicit if explicit else versioned
    choice = newest_checkpoint(folders)
    if choice is not None:
        return choice
    where = ", ".join(str(f) for f in explicit) if explicit else f"{root}/version_*/checkpoints/"
    found = []
    for folder in folders:
        for f in sorted(Path(folder).glob("*.ckpt")) if Path(folder).is_dir() else []:
            found.append(f"{f}: {inspect_checkpoint(f)[1]}")
    extra = f" (found only unusable files: {'; '.join(found)})" if found else ""
    raise FileNotFoundError(
        f"--ckpt_path last: no earlier run has a checkpoint that loads (looked in {where}){extra}. Start "
        f"without --ckpt_path, pass --ckpt_path <file.ckpt>, or set --trainer.default_root_dir to the folder of "
        f"the run to resume (now {trainer.default_root_dir!s})"
    )


def find_last_checkpoint(trainer) -> Path:
    """The checkpoint that ``--ckpt_path last`` resumes (:func:`choose_last_checkpoint`'s path)."""
    return choose_last_checkpoint(trainer).path


_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")


def check_ckpt_path(path: Any) -> Optional[Path]:
    """Check an explicit local ``--ckpt_path`` file before Lightning loads it; return it as an absolute path.

    ``None``, Lightning's keywords (``best``, ``hpc``, ``registry``, ...) and remote URLs are returned as
    ``None`` (nothing to check here). A missing, empty, truncated or non-checkpoint file raises an error
    naming the file and what is wrong with it (:func:`graphneg.runs.inspect_checkpoint`).
    """
    if path is None or not isinstance(path, (str, os.PathLike)):
        return None
    text = os.fspath(path)
    if text in _CKPT_KEYWORDS or text.startswith("registry:") or (
            "://" in text and not text.startswith("file://")):
        return None
    local = Path(text[len("file://"):] if text.startswith("file://") else text).expanduser().absolute()
    if not local.is_file():
        raise FileNotFoundError(f"--ckpt_path {text}: no such file ({local}); pass a .ckpt file written by "
                                "graphneg fit, or --ckpt_path last to resume the latest run")
    _, why = inspect_checkpoint(local)
    if why is not None:
        raise ValueError(f"--ckpt_path {text} is not a checkpoint graphneg can resume: {why}; pass a .ckpt file "
                         "written by graphneg fit, or --ckpt_path last to resume the latest run")
    return local


# ------------------------------------------------------------------ loggers on claimed folders (graphneg.cli)
#: the loggers that keep each run in ``<root_dir>/version_<N>`` and take that folder as ``version=N``
VERSIONED_LOGGERS = (TensorBoardLogger, CSVLogger)


def _class_spec(item: Any) -> Optional[Tuple[str, dict]]:
    """``(class_path, constructor arguments)`` of a parsed ``{class_path, init_args}`` logger entry."""
    get = getattr(item, "get", None)
    if not callable(get) or not isinstance(get("class_path"), str):
        return None
    init, extra = get("init_args") or {}, get("dict_kwargs") or {}
    init = init.as_dict() if hasattr(init, "as_dict") else dict(init)
    return get("class_path"), {**init, **dict(extra)}


def logger_rebuild_arguments(trainer, logger_config: Any) -> List[Optional[dict]]:
    """For each of ``trainer.loggers``: the constructor arguments, all but ``version``, that build it again;
    ``None`` for a logger that keeps the folder it has (a fixed ``version``, a logger without ``version_N``
    folders (not one of :data:`VERSIONED_LOGGERS`), or one not built from ``logger_config``).

    Args:
        trainer: a Trainer built from the config.
        logger_config: the parsed ``trainer.logger`` value of its LightningCLI config: ``None`` / ``True``
            (Lightning's default logger, ``TensorBoardLogger`` or ``CSVLogger`` with
            ``save_dir=trainer.default_root_dir`` and the SLURM job id, if any, as its version), ``False``, or
            one or a list of ``{class_path, init_args}`` entries (as jsonargparse parses them).
    """
    loggers = list(trainer.loggers)
    if logger_config is None or logger_config is True:
        # Lightning's default logger, recognised by what Lightning built (not a logger passed as an object)
        default = (len(loggers) == 1 and type(loggers[0]) in VERSIONED_LOGGERS and loggers[0].name == "lightning_logs"
                   and os.fspath(loggers[0].save_dir) == os.fspath(trainer.default_root_dir))
        if default and SLURMEnvironment.job_id() is None:
            return [{"save_dir": trainer.default_root_dir}]
        return [None] * len(loggers)
    entries = logger_config if isinstance(logger_config, (list, tuple)) else [logger_config]
    if len(entries) != len(loggers):
        return [None] * len(loggers)
    out: List[Optional[dict]] = []
    for logger, entry in zip(loggers, entries):
        spec = _class_spec(entry)
        if (spec is None or not isinstance(logger, VERSIONED_LOGGERS)
                or "version" not in inspect.signature(type(logger)).parameters
                or spec[0].rsplit(".", 1)[-1] != type(logger).__name__ or spec[1].get("version") is not None):
            out.append(None)
            continue
        out.append({k: v for k, v in spec[1].items() if k != "version"})
    return out


def claim_logger_versions(trainer, logger_config: Any) -> List[Path]:
    """Give each logger of ``trainer`` without a fixed version a folder of its own, claimed atomically
    (:func:`claim_version_dir`) before anything is written; return the claimed folders.

    The logger is built again through its public constructor, with the arguments it was built with
    (:func:`logger_rebuild_arguments`) and ``version=N``, and the new list is set as ``trainer.loggers``.
    Loggers sharing a root folder share the number. Rank zero only (other ranks return ``[]`` and keep
    their loggers; Lightning broadcasts rank zero's checkpoint folder to them). Loggers passed as objects
    rather than through the config are left as they are.
    """
    if not trainer.is_global_zero:
        return []
    claimed: dict = {}
    loggers: List[Logger] = []
    for logger, kwargs in zip(trainer.loggers, logger_rebuild_arguments(trainer, logger_config)):
        if kwargs is None:
            loggers.append(logger)
            continue
        root = str(Path(logger.root_dir).absolute())
        if root not in claimed:
            claimed[root] = claim_version_dir(root)
        loggers.append(type(logger)(**kwargs, version=claimed[root][0]))
    if claimed:
        trainer.loggers = loggers
    return [path for _, path in claimed.values()]
