"""Two-view contrastive learning on images: :class:`ContrastiveModule` (SimCLR / HCL / UnReMix setting).

See :mod:`graphneg.models.contrastive.base` for the shared training step and the logged scalars.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from graphneg.metrics.probe import knn_accuracy, linear_probe
from graphneg.models.contrastive.base import _ContrastiveBase, _normal_tensor, knn_loo_accuracy

__all__ = ["ContrastiveModule"]


class ContrastiveModule(_ContrastiveBase):
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
        knn_k, knn_t: weighted kNN monitor (HCL: ``k = 200``; :func:`graphneg.metrics.knn_accuracy`).
        knn_bank_limit: embed at most this many reference images per validation (``None``: all).
        probe_at_end: run kNN + linear probe at the end of fit (``probe/knn_top1``,
            ``probe/linear_top1``; also kept in :attr:`probe_results`).
        probe_epochs, probe_lr: :func:`graphneg.metrics.linear_probe` settings.
        log_histograms: log the UnReMix score histograms each epoch.
        projector_max: images / embeddings in the TensorBoard projector snapshot (0: none).
        seed: seed of the linear probe's batch order (and of the fallback split).
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
        knn_k: int = 200,
        knn_t: float = 0.1,
        knn_bank_limit: Optional[int] = None,
        probe_at_end: bool = True,
        probe_epochs: int = 100,
        probe_lr: float = 1e-2,
        log_histograms: bool = True,
        projector_max: int = 500,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=list(self._ignored_init_args))
        if not isinstance(knn_k, int) or knn_k < 1:
            raise ValueError(f"knn_k must be a positive int, got {knn_k!r}")
        if not knn_t > 0:
            raise ValueError(f"knn_t must be > 0, got {knn_t}")
        if not isinstance(probe_epochs, int) or probe_epochs < 1:
            raise ValueError(f"probe_epochs must be a positive int, got {probe_epochs!r}")
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

    # ------------------------------------------------------------------ validation: online kNN
    def _eval_reset(self) -> None:
        self._val: Dict[int, Tuple[List[Tensor], List[Tensor]]] = {}
        self._val_img: List[Tensor] = []

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = self._eval_batch(batch)
        embs, labs = self._val.setdefault(dataloader_idx, ([], []))
        embs.append(self.embed(x).detach())
        labs.append(y.detach().reshape(-1))
        num_loaders = len(self.trainer.num_val_batches) if self._trainer is not None else 1
        query_loader = dataloader_idx == max(num_loaders - 1, 0)  # [memory, test]: images of the test set
        if query_loader and x.dim() == 4 and x.size(-1) <= 64:
            kept = sum(t.size(0) for t in self._val_img)
            if kept < self.hparams.projector_max:
                self._val_img.append(x[: self.hparams.projector_max - kept].detach().cpu())

    def _bank(self, dm) -> Optional[Tuple[Tensor, Tensor]]:
        for name in ("memory_dataloader", "train_eval_dataloader"):
            if dm is not None and callable(getattr(dm, name, None)):
                return self._embed_loader(getattr(dm, name)(), self.hparams.knn_bank_limit)
        return None

    def on_validation_epoch_end(self) -> None:
        val, imgs = self._val, self._val_img
        self._eval_reset()
        if self.trainer.sanity_checking or not val:
            return
        if len(val) >= 2:  # [memory, test] loaders (val_with_memory=True): 0 = bank, last = queries
            bank_e, bank_l = (torch.cat(t) for t in val[min(val)])
            bank = (self._gather(bank_e), self._gather(bank_l))
            q = val[max(val)]
        else:
            bank, q = None, next(iter(val.values()))
        emb, lab = self._gather(torch.cat(q[0])), self._gather(torch.cat(q[1]))
        if bank is None:
            bank = self._bank(self._datamodule())
        hp = self.hparams
        if bank is not None:
            acc = knn_accuracy(bank[0], bank[1], emb, lab, k=hp.knn_k, temperature=hp.knn_t)
        else:  # documented fallback: leave-one-out over the validation set
            acc = knn_loo_accuracy(emb, lab, k=hp.knn_k, temperature=hp.knn_t)
        self.log("val/knn_top1", acc, prog_bar=True, batch_size=emb.size(0))
        self._last_eval = (_normal_tensor(emb).cpu(), _normal_tensor(lab).cpu(),
                           _normal_tensor(torch.cat(imgs)) if imgs else None)

    # ------------------------------------------------------------------ test: kNN + linear probe
    def on_test_epoch_start(self) -> None:
        self._eval_reset()

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = self._eval_batch(batch)
        embs, labs = self._val.setdefault(dataloader_idx, ([], []))
        embs.append(self.embed(x).detach())
        labs.append(y.detach().reshape(-1))

    def on_test_epoch_end(self) -> None:
        val = self._val
        self._eval_reset()
        if not val:
            return
        q = val[max(val)]
        emb, lab = self._gather(torch.cat(q[0])), self._gather(torch.cat(q[1]))
        bank = (tuple(self._gather(torch.cat(t)) for t in val[min(val)]) if len(val) >= 2
                else self._bank(self._datamodule()))
        with torch.inference_mode(False):
            res = self._probes(_normal_tensor(emb), _normal_tensor(lab),
                               None if bank is None else tuple(_normal_tensor(t) for t in bank))
        for k, v in res.items():
            self.log(f"test/{k}", v, batch_size=emb.size(0))

    def _probes(self, emb: Tensor, lab: Tensor, bank: Optional[Tuple[Tensor, Tensor]]) -> Dict[str, float]:
        hp = self.hparams
        if bank is None:  # fallback: leave-one-out kNN; linear probe on a seeded half / half split
            knn = knn_loo_accuracy(emb, lab, k=hp.knn_k, temperature=hp.knn_t)
            perm = torch.randperm(emb.size(0), generator=torch.Generator().manual_seed(hp.seed))
            perm = perm.to(emb.device)
            half = emb.size(0) // 2
            tr, te = perm[:half], perm[half:]
            lin = linear_probe(emb[tr], lab[tr], emb[te], lab[te], epochs=hp.probe_epochs, lr=hp.probe_lr,
                               seed=hp.seed, num_classes=int(lab.max()) + 1)
            return {"knn_top1": knn, "linear_top1": lin}
        bank_e, bank_l = bank
        knn = knn_accuracy(bank_e, bank_l, emb, lab, k=hp.knn_k, temperature=hp.knn_t)
        lin = linear_probe(bank_e, bank_l, emb, lab, epochs=hp.probe_epochs, lr=hp.probe_lr, seed=hp.seed)
        return {"knn_top1": knn, "linear_top1": lin}

    def evaluate(self, datamodule) -> Dict[str, float]:
        """Downstream accuracy of the current encoder: ``{"knn_top1", "linear_top1"}`` in ``[0, 1]``.

        Queries: the DataModule's test loader (else its validation loader); reference set: its
        ``memory_dataloader()`` / ``train_eval_dataloader()`` (else the fallback of the module
        docstring). Also usable on an untrained module (the random-encoder baseline).
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                loader = (datamodule.test_dataloader() if callable(getattr(datamodule, "test_dataloader", None))
                          else datamodule.val_dataloader())
                if isinstance(loader, (list, tuple)) and loader and isinstance(loader[-1], DataLoader):
                    loader = loader[-1]  # [memory, test] loaders of val_with_memory=True
                emb, lab = self._embed_loader(loader)
                bank = self._bank(datamodule)
            return self._probes(emb, lab, bank)
        finally:
            self.train(was_training)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.embed(x)
