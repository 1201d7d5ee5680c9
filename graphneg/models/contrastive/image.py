"""Two-view contrastive learning on images: :class:`ContrastiveModule` (SimCLR / HCL / UnReMix setting).

See :mod:`graphneg.models.contrastive.base` for the shared training step and the logged scalars, and
:mod:`graphneg.callbacks` for the downstream probes (online kNN, linear probe).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

from torch import Tensor, nn

from graphneg.models.contrastive.base import ContrastiveModuleBase

__all__ = ["ContrastiveModule"]


class ContrastiveModule(ContrastiveModuleBase):
    r"""Contrastive learning on two augmented image views (SimCLR / HCL / UnReMix setting).

    Training step: ``loss(g(f(v1)), g(f(v2)))`` on batches ``(v1, v2)`` or ``(v1, v2, labels)``
    (:class:`graphneg.data.MNIST5kDataModule` in ``mode="contrastive"``, the CIFAR / STL-10
    DataModules of :mod:`graphneg.data.vision`). Labels reach the loss only with
    ``supervised=True`` (then same-class samples are not negatives; STL-10's unlabeled images carry
    ``-1`` and must not be used that way). Automatic optimisation.

    Args:
        encoder: image encoder ``[N, C, H, W] -> [N, D]`` (:func:`graphneg.models.resnet18`,
            :class:`graphneg.models.SmallCNN`, ...).
        loss: a two-view contrastive loss ``loss(z1, z2[, labels])`` (:mod:`graphneg.losses`).
        projector: projection head; ``None`` builds :func:`build_projector` from ``projector_dims``.
        projector_dims: widths of the default head after the encoder (HCL: ``(512, 128)``; ``()``:
            no head).
        projector_batch_norm: BatchNorm1d in the hidden layers of the default head (HCL: yes).
        lr, weight_decay: optimiser settings (HCL: Adam, 1e-3, 1e-6).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (``momentum`` for SGD).
        scheduler: ``"none"`` or ``"cosine"`` (per-step cosine decay to 0 over the run).
        supervised: pass the batch labels to the loss.
        log_histograms: log the UnReMix score histograms each epoch.
        projector_max: images / embeddings in the TensorBoard projector snapshot (0: none).

    Downstream evaluation is done by callbacks (``trainer.callbacks``): :class:`graphneg.callbacks.KNNProbe`
    (online weighted-kNN accuracy ``val/knn_top1`` every epoch; HCL official code ``image/main.py``
    ``test()``) and :class:`graphneg.callbacks.LinearProbe` (``test/linear_top1``, ``probe/linear_top1``
    at the end of fit), with the DataModule's ``memory_dataloader()`` (:mod:`graphneg.data.vision`) or
    ``train_eval_dataloader()`` (:class:`graphneg.data.MNIST5kDataModule`) as reference set.
    """

    def __init__(
        self,
        encoder: nn.Module,
        loss: nn.Module,
        projector: Optional[nn.Module] = None,
        projector_dims: Optional[Sequence[int]] = (512, 128),
        projector_batch_norm: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        optimizer: str = "adam",
        momentum: float = 0.9,
        scheduler: str = "none",
        supervised: bool = False,
        log_histograms: bool = True,
        projector_max: int = 500,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=list(self._ignored_init_args))
        self._init_common(encoder, loss, projector,
                          (512, 128) if projector_dims is None else projector_dims, projector_batch_norm)

    # ------------------------------------------------------------------ batches
    def embed(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    @staticmethod
    def _split_batch(batch):
        if not isinstance(batch, (list, tuple)) or len(batch) not in (2, 3):
            raise ValueError(
                "ContrastiveModule expects training batches (view1, view2) or (view1, view2, labels), got "
                f"{type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (list, tuple)) else "")
                + "; use a contrastive DataModule (e.g. MNIST5kDataModule(mode='contrastive'))"
            )
        v1, v2 = batch[0], batch[1]
        labels = batch[2] if len(batch) == 3 else None
        if v1.shape != v2.shape:
            raise ValueError(f"the two views must have the same shape, got {tuple(v1.shape)} and {tuple(v2.shape)}")
        return v1, v2, labels, v1.size(0)

    @staticmethod
    def _eval_batch(batch):
        if isinstance(batch, (list, tuple)) and len(batch) >= 2:
            return batch[0], batch[-1]
        raise ValueError("evaluation batches must be (images, labels)")

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Dict[str, Tensor]:
        """``{"embeddings": h, "labels": y}`` for the probes of :mod:`graphneg.callbacks`; also keeps
        the query loader's first ``projector_max`` embeddings and images for the projector snapshot
        (loaders ``[memory, test]``: the test images)."""
        h, y = self.embed_batch(batch)
        num_loaders = len(self.trainer.num_val_batches)
        if dataloader_idx == max(num_loaders - 1, 0):
            self._keep_for_projector(h, y, self._eval_batch(batch)[0])
        return {"embeddings": h, "labels": y}

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.embed(x)
