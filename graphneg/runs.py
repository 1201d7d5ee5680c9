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
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ["claim_version_dir", "version_number", "inspect_checkpoint", "CheckpointChoice",
           "newest_checkpoint", "LAST_NAME"]

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
