"""Console progress bars for long non-training work (evaluation of large sets, probe reference sets).

Issue 12: a user running an evaluation of a large set (e.g. the 60,502 SOP queries) sees a bar; tests,
logs and other non-interactive runs see nothing. The rule every caller follows (``progress`` argument):

* ``progress=None`` (default): a bar only when the work is large (``total > PROGRESS_THRESHOLD`` items)
  **and** standard output is a terminal (``sys.stdout.isatty()``);
* ``progress=True``: always a bar; ``progress=False``: never.

The bar is :class:`rich.progress.Progress` (``rich`` is a dependency) with ``transient=True`` (removed
when done). When another rich live display is active (e.g. Lightning's ``RichProgressBar`` during a
fit), rich refuses a second one; the work then runs without a bar rather than failing. Nothing here is
used by building blocks on the hot path (:func:`graphneg.metrics.retrieval.chunked_topk` and
:func:`graphneg.graph.knn_index` have no bar); only the outer evaluation loops advance one.
"""
from __future__ import annotations

import sys
from typing import Optional

#: the size (queries / samples) above which ``progress=None`` shows a bar on a terminal
PROGRESS_THRESHOLD: int = 20_000

__all__ = ["PROGRESS_THRESHOLD", "progress_enabled", "ProgressBar"]


def progress_enabled(progress: Optional[bool], total: Optional[int]) -> bool:
    """Whether to show a bar: ``progress`` when given, else ``total > PROGRESS_THRESHOLD`` and a TTY.

    An unknown ``total`` (``None``) counts as small under ``progress=None``.
    """
    if progress is not None:
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True, False or None (automatic), got {progress!r}")
        return progress
    if total is None or total <= PROGRESS_THRESHOLD:
        return False
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(callable(isatty) and isatty())


class ProgressBar:
    """A context manager around one rich task; a no-op (prints nothing, imports nothing) when disabled.

    Usage::

        with ProgressBar("retrieval", total=n, enabled=progress_enabled(progress, n)) as bar:
            for chunk in work:
                ...
                bar.advance(len(chunk))
    """

    def __init__(self, description: str, total: Optional[int], enabled: bool) -> None:
        self.description, self.total, self.enabled = description, total, bool(enabled)
        self._progress = None
        self._task = None

    def __enter__(self) -> "ProgressBar":
        if not self.enabled:
            return self
        from rich.errors import LiveError
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
        try:
            progress.start()
        except LiveError:  # another live display (e.g. Lightning's RichProgressBar) owns the console
            return self
        self._progress = progress
        self._task = progress.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int) -> None:
        """Advance the bar by ``n`` items (``n`` a Python int: no tensor is read)."""
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
