"""A stop on non-finite training losses, before a checkpoint of the broken state is written.

:class:`DetectNaN` stops training with :class:`NonFiniteLossError` (naming epoch, batch index and global
step) when the training loss is NaN or inf; it reads the flag from the device only every
``check_every_n_steps`` batches, at epoch end and before every checkpoint save.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Optional

import torch
from lightning.pytorch.callbacks import Callback


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


__all__ = ["DetectNaN", "NonFiniteLossError"]
