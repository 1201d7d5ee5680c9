"""Deep metric learning as a LightningModule, optionally with a hard-negative generator (GCA-HNG)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from graphneg.graph import check_embeddings, check_labels, check_multiclass
from graphneg.metrics.retrieval import retrieval_metrics


class EmbeddingEvalMixin:
    """Collects validation/test embeddings and logs retrieval metrics + a projector snapshot.

    Expects ``self.embed(x)``; batches are ``(x, labels)``. Metrics are computed once per epoch on the
    whole (gathered) evaluation set with :func:`graphneg.metrics.retrieval_metrics`, which searches
    neighbours in chunks.
    """

    ks: Sequence[int] = (1, 2, 4, 8)

    def _eval_reset(self) -> None:
        self._eval_emb: List[Tensor] = []
        self._eval_lab: List[Tensor] = []
        self._eval_img: List[Tensor] = []

    def _eval_collect(self, batch) -> None:
        x, y = batch[0], batch[-1]
        emb = self.embed(x)
        self._eval_emb.append(emb.detach())
        self._eval_lab.append(y.detach())
        kept = sum(t.size(0) for t in self._eval_img)
        if x.dim() == 4 and x.size(-1) <= 64 and kept < self.hparams.projector_max:
            self._eval_img.append(x[: self.hparams.projector_max - kept].detach().cpu())

    def _eval_finish(self, stage: str) -> Optional[Dict[str, float]]:
        if not getattr(self, "_eval_emb", None):
            return None
        emb, lab = torch.cat(self._eval_emb), torch.cat(self._eval_lab)
        if self.trainer is not None and self.trainer.world_size > 1:
            emb = self.all_gather(emb).flatten(0, 1)
            lab = self.all_gather(lab).flatten(0, 1)
        res = retrieval_metrics(
            emb, lab, ks=self.hparams.ks, metric=self.hparams.eval_metric, nmi=self.hparams.eval_nmi
        )
        for key in ("num_queries", "num_excluded"):
            res.pop(key)
        for k, v in res.items():
            self.log(f"{stage}/{k}", v, prog_bar=k in ("recall@1", "map@r"))
        self._last_eval = (emb.cpu(), lab.cpu(), torch.cat(self._eval_img) if self._eval_img else None)
        self._eval_reset()
        return res

    def _log_projector(self) -> None:
        last = getattr(self, "_last_eval", None)
        logger = self.logger
        if last is None or logger is None or not hasattr(logger.experiment, "add_embedding"):
            return
        emb, lab, img = last
        n = min(self.hparams.projector_max, emb.size(0))
        label_img = None
        if img is not None and img.size(0) >= n:
            img = img[:n].float()
            lo, hi = img.amin(dim=(1, 2, 3), keepdim=True), img.amax(dim=(1, 2, 3), keepdim=True)
            label_img = (img - lo) / (hi - lo).clamp_min(1e-8)
        logger.experiment.add_embedding(
            emb[:n], metadata=lab[:n].tolist(), label_img=label_img, global_step=self.global_step,
            tag="embeddings/eval",
        )


class MetricLearningModule(EmbeddingEvalMixin, L.LightningModule):
    """Deep metric learning: an encoder trained with a metric loss on C x m batches.

    With ``generator=None`` each step is ``loss(encoder(x), y)``. With a hard-negative generator
    (:class:`graphneg.nn.GCAHNG`) each step is the three-step GCA-HNG update (see
    :meth:`_generator_step`). Optimisation is manual (Lightning ``automatic_optimization = False``)
    so that each parameter group has its optimiser, as the official GCA-HNG ``train.py``.

    Args:
        encoder: image -> embedding network, e.g. :class:`graphneg.models.SmallCNN`.
        loss: a metric loss taking ``(embeddings, labels)`` (``graphneg.losses``).
        generator: optional hard-negative generator.
        num_classes: training classes (needed by the generator's softmax classifier).
        lr / weight_decay: AdamW for the encoder and the loss's parameters (e.g. proxies).
        generator_lr / classifier_lr: AdamW for the generator and the softmax classifier.
        grad_clip: gradient value clipping (official ``clip_grad_value_``, 10.0); ``None`` disables.
        warmup_epochs: epochs during which only the encoder's head (``head_name``) trains.
        head_name: the encoder attribute holding its last embedding layer.
        ks: Recall@K values logged each validation epoch.
        eval_metric: ``"cosine"`` or ``"euclidean"`` retrieval.
        eval_nmi: also log NMI (k-means) each validation epoch.
        projector_max: samples in the TensorBoard projector snapshot.
    """

    def __init__(
        self,
        encoder: nn.Module,
        loss: nn.Module,
        generator: Optional[nn.Module] = None,
        num_classes: Optional[int] = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        generator_lr: float = 3e-4,
        classifier_lr: float = 1e-3,
        grad_clip: Optional[float] = 10.0,
        warmup_epochs: int = 0,
        head_name: str = "fc",
        synthetic_beta: float = 30.0,
        classifier_weight: float = 10.0,
        ks: Sequence[int] = (1, 2, 4, 8),
        eval_metric: str = "cosine",
        eval_nmi: bool = True,
        projector_max: int = 1000,
        scheduler: str = "cosine",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "loss", "generator"])
        self.automatic_optimization = False
        self.encoder, self.loss, self.generator = encoder, loss, generator
        if scheduler not in ("cosine", "none"):
            raise ValueError(f"scheduler must be 'cosine' or 'none', got {scheduler!r}")
        if warmup_epochs > 0 and not isinstance(getattr(encoder, head_name, None), nn.Module):
            raise ValueError(
                f"warmup_epochs={warmup_epochs} freezes the encoder except its head, but the encoder has no "
                f"module attribute {head_name!r}; set head_name to its last layer's attribute name"
            )
        if generator is not None:
            self._init_generator_state(num_classes)
        self._eval_reset()

    # ------------------------------------------------------------------ model
    def embed(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def _check_batch(self, emb: Tensor, y: Tensor) -> Tensor:
        check_embeddings(emb, "encoder output")
        y = check_labels(y, emb.size(0), "batch labels")
        check_multiclass(y, "this training batch")
        return y

    def _set_warmup(self) -> None:
        if self.hparams.warmup_epochs <= 0:
            return
        head = set(getattr(self.encoder, self.hparams.head_name).parameters())
        freeze = self.current_epoch < self.hparams.warmup_epochs
        for p in self.encoder.parameters():
            if p not in head:
                p.requires_grad_(not freeze)

    def on_train_epoch_start(self) -> None:
        self._set_warmup()

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch
        if self.generator is not None:
            return self._generator_step(x, y)
        opt = self.optimizers()
        emb = self.encoder(x)
        y = self._check_batch(emb, y)
        loss = self.loss(emb, y)
        opt.zero_grad()
        self.manual_backward(loss)
        self._clip(self.encoder, self.loss)
        opt.step()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss.detach()

    def _clip(self, *modules: nn.Module) -> None:
        if self.hparams.grad_clip:
            params = [p for m in modules for p in m.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_value_(params, self.hparams.grad_clip)

    def on_train_epoch_end(self) -> None:
        scheds = self.lr_schedulers()
        if scheds is None:
            return
        for s in scheds if isinstance(scheds, list) else [scheds]:
            s.step()

    def configure_optimizers(self):
        hp = self.hparams
        groups = [{"params": list(self.encoder.parameters()), "lr": hp.lr}]
        loss_params = list(self.loss.parameters())
        if loss_params:
            groups.append({"params": loss_params, "lr": hp.lr})
        opts = [torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)]
        if self.generator is not None:
            opts.append(torch.optim.AdamW(self.classifier.parameters(), lr=hp.classifier_lr))
            opts.append(
                torch.optim.AdamW(self.generator.parameters(), lr=hp.generator_lr, weight_decay=hp.weight_decay)
            )
        if hp.scheduler == "none":
            return opts
        t_max = max(int(self.trainer.max_epochs or 1), 1) if self._trainer is not None else 1
        scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=t_max) for o in opts]
        return opts, scheds

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self) -> None:
        self._eval_reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_collect(batch)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._eval_finish("val")
        else:
            self._eval_reset()

    def on_test_epoch_start(self) -> None:
        self._eval_reset()

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_collect(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_finish("test")

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.embed(x)

    def on_fit_end(self) -> None:
        self._log_projector()


__all__ = ["MetricLearningModule", "EmbeddingEvalMixin"]
