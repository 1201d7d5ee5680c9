"""A CPU-runnable detector of device -> host synchronisations (issue 21: no host sync in a training step).

On CUDA a host sync happens when the CPU needs a value or a size that only the GPU knows. The ATen ops
below are the ones that force it; :class:`SyncCounter` (a ``TorchDispatchMode``) records every call to
them with the first stack frame inside ``graphneg/``, on any device, so the CPU test suite sees what a
CUDA step would synchronise on:

* ``aten._local_scalar_dense``: ``tensor.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, a Python
  ``if`` / ``while`` / ``and`` on a tensor, ``assert t``;
* ``aten.is_nonzero``, ``aten.equal`` (``torch.equal`` returns a Python bool);
* data-dependent output sizes: ``aten.nonzero`` (``torch.where(cond)``, ``mask.nonzero()``),
  ``aten.masked_select`` (``t[mask]`` of a boolean mask), ``aten.index.Tensor`` / ``aten.index_put``
  with a boolean index, the ``aten.unique`` family, ``aten.repeat_interleave`` without
  ``output_size``, ``aten.bincount`` (its length is ``max + 1``), ``aten.histc`` on CUDA with
  automatic range;
* device -> host copies: ``aten._to_copy`` / ``aten.copy_`` from a CUDA tensor to the CPU (only seen on
  CUDA), and, patched on ``torch.Tensor`` while the mode is active, ``tolist()`` / ``numpy()``
  (both read a CUDA tensor's data on the host; on the CPU they do not dispatch, so they are patched).

Where CUDA exists, :func:`count_syncs` also runs the block under
``torch.cuda.set_sync_debug_mode("warn")`` and counts CUDA's own sync warnings.

Ops that do *not* sync and are not recorded: ``topk``, ``sort``, ``argmax``, ``index_select``,
``gather``, ``scatter_add``, ``masked_fill``, ``where(cond, a, b)``, reductions to tensors, ``cumsum``,
``searchsorted``, ``multinomial``. Not counted either: ops run inside ``torch.optim`` (its step counters
are CPU scalars by design, so their ``.item()`` reads host memory on CUDA too).
"""
from __future__ import annotations

import contextlib
import os
import traceback
import warnings
from dataclasses import dataclass, field
from typing import List

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "graphneg") + os.sep

aten = torch.ops.aten

#: ops run inside these paths are not counted: ``torch.optim`` keeps its step counters as CPU scalars
#: by design (not ``capturable``), so their ``.item()`` reads host memory on CUDA too.
HOST_RESIDENT = os.sep + os.path.join("torch", "optim") + os.sep

ALWAYS = {
    aten._local_scalar_dense.default: "item/bool/int/float of a tensor",
    aten.is_nonzero.default: "bool of a tensor",
    aten.equal.default: "torch.equal",
    aten.nonzero.default: "nonzero (data-dependent size)",
    aten.masked_select.default: "boolean-mask select (data-dependent size)",
    aten._unique.default: "unique (data-dependent size)",
    aten._unique2.default: "unique (data-dependent size)",
    aten.unique_dim.default: "unique (data-dependent size)",
    aten.unique_consecutive.default: "unique_consecutive (data-dependent size)",
    aten.bincount.default: "bincount (length = max + 1)",
}
REPEAT_INTERLEAVE = {aten.repeat_interleave.Tensor, aten.repeat_interleave.self_Tensor}
BOOL_INDEX = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}


@dataclass
class SyncEvent:
    op: str
    why: str
    where: str  # "graphneg/path.py:line in function" (first frame inside the package), else the caller

    def __str__(self) -> str:
        return f"{self.where}: {self.op} ({self.why})"


def _location() -> str:
    frames = traceback.extract_stack()
    for fr in reversed(frames):
        if fr.filename.startswith(PACKAGE):
            return f"{os.path.relpath(fr.filename, ROOT)}:{fr.lineno} in {fr.name}"
    for fr in reversed(frames):  # not in the package: the nearest frame outside torch and this file
        if "site-packages" not in fr.filename and not fr.filename.endswith("sync_counter.py"):
            return f"{os.path.relpath(fr.filename, ROOT)}:{fr.lineno} in {fr.name}"
    return "<unknown>"


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else None
    if not isinstance(indices, (list, tuple)):
        return False
    return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in indices)


class SyncCounter(TorchDispatchMode):
    """Records the ops of this module's docstring that force a device -> host sync on CUDA."""

    def __init__(self):
        super().__init__()
        self.events: List[SyncEvent] = []

    def _add(self, op, why):
        if any(HOST_RESIDENT in fr.filename for fr in traceback.extract_stack()):
            return
        self.events.append(SyncEvent(str(op), why, _location()))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in ALWAYS:
            self._add(func, ALWAYS[func])
        elif func in BOOL_INDEX and _has_bool_index(args):
            self._add(func, "boolean-mask indexing (data-dependent size)")
        elif func in REPEAT_INTERLEAVE and kwargs.get("output_size") is None:
            self._add(func, "repeat_interleave without output_size")
        elif func in (aten._to_copy.default, aten.copy_.default):
            src = args[1] if func is aten.copy_.default else args[0]
            dst_dev = kwargs.get("device") if func is aten._to_copy.default else args[0].device
            if isinstance(src, torch.Tensor) and src.is_cuda and dst_dev is not None \
                    and torch.device(dst_dev).type == "cpu":
                self._add(func, "device -> host copy")
        return func(*args, **kwargs)


@dataclass
class SyncReport:
    events: List[SyncEvent] = field(default_factory=list)
    cuda_warnings: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events) + len(self.cuda_warnings)

    def sites(self) -> List[str]:
        """Distinct ``location: op`` strings, in first-seen order."""
        seen = []
        for e in self.events:
            if str(e) not in seen:
                seen.append(str(e))
        return seen + [w for w in self.cuda_warnings if w not in seen]

    def message(self) -> str:
        return "host synchronisations:\n  " + "\n  ".join(self.sites())


@contextlib.contextmanager
def count_syncs(cuda_mode: str = "warn"):
    """``with count_syncs() as rep: ...``: after the block, ``rep.events`` lists its sync-forcing ops.

    Where CUDA exists the block also runs under ``torch.cuda.set_sync_debug_mode(cuda_mode)``:
    ``"warn"`` (default) collects CUDA's own warnings in ``rep.cuda_warnings`` so that every site is
    listed; ``"error"`` raises at the first synchronising CUDA call instead.
    """
    rep = SyncReport()
    counter = SyncCounter()
    originals = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}

    def patched(name):
        orig = originals[name]

        def f(self, *a, **kw):
            counter.events.append(SyncEvent(f"Tensor.{name}", "reads the data on the host", _location()))
            return orig(self, *a, **kw)
        return f

    cuda = torch.cuda.is_available()
    old_mode = torch.cuda.get_sync_debug_mode() if cuda else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in originals:
            setattr(torch.Tensor, name, patched(name))
        if cuda:
            torch.cuda.set_sync_debug_mode(cuda_mode)
        try:
            with counter:
                yield rep
        finally:
            for name, orig in originals.items():
                setattr(torch.Tensor, name, orig)
            if cuda:
                torch.cuda.set_sync_debug_mode(old_mode)
    rep.events.extend(counter.events)
    rep.cuda_warnings.extend(str(w.message) for w in caught if "synchronizing" in str(w.message).lower())
