r"""Two-view contrastive learning as LightningModules, on images and on graphs.

Both modules train ``loss(g(f(v_1)), g(f(v_2)))``: an encoder ``f`` and a projection head ``g`` on
two augmented views of the same batch (SimCLR, Chen et al., ICML 2020, Sec. 2.1; GraphCL, You et
al., NeurIPS 2020, Sec. 3.2), with any loss of :mod:`graphneg.losses.contrastive`
(:class:`~graphneg.losses.InfoNCELoss`, :class:`~graphneg.losses.DCLLoss`,
:class:`~graphneg.losses.HCLLoss`, :class:`~graphneg.losses.UnReMixLoss`): switching the loss is one
config line (``--model.init_args.loss.class_path=graphneg.losses.HCLLoss``). Downstream evaluation
always uses the encoder output ``h = f(x)`` (the representation before the head), as SimCLR / HCL
(images) and InfoGraph / GraphCL / HCL (graphs) do.

* :class:`ContrastiveModule` (images): batches ``(view1, view2[, labels])``; an online weighted-kNN
  accuracy on the validation set every epoch (``val/knn_top1``, HCL official code ``image/main.py``
  ``test()``) and a linear probe at the end of fit (``probe/linear_top1``,
  :func:`graphneg.metrics.probe.linear_probe`).
* :class:`GraphContrastiveModule` (graphs): batches ``(Batch view1, Batch view2)`` of
  :class:`graphneg.data.tu.TUDataModule`; every ``eval_every`` epochs the embeddings of all graphs
  go through a fast SVC protocol (``val/svc_acc``), the test stage and the end of fit run the full
  InfoGraph protocol (10-fold CV, inner grid over ``C``; :func:`graphneg.metrics.graph_protocol.svc_protocol`).

Reference (training) set of the image kNN / probe: the DataModule's ``memory_dataloader()``
(:mod:`graphneg.data.vision`; HCL's ``memory_data``) or ``train_eval_dataloader()``
(:class:`graphneg.data.MNIST5kDataModule`), un-augmented labelled training images; a validation
loader pair ``[memory, test]`` (``val_with_memory=True``) is used the same way. A DataModule with
neither gets the documented fallback: leave-one-out kNN over the validation embeddings
(:func:`knn_loo_accuracy`) and a linear probe on a seeded half / half split of them.

TensorBoard (every logger with ``add_histogram`` / ``add_embedding``): ``train/loss_step``,
``train/loss_epoch``, ``train/pos_cos`` (mean cosine of the positive pairs' projections),
``val/knn_top1`` or ``val/svc_acc`` / ``val/svc_std``, the learning rate (``LearningRateMonitor``,
a default callback of :mod:`graphneg.cli`), the UnReMix scores of the epoch's last batch as
histograms ``unremix/similarity``, ``unremix/uncertainty``, ``unremix/representativeness`` and
``unremix/weights`` (negative pairs only; when the loss has ``last_scores``), the end-of-fit probes
``probe/*`` and the validation embeddings for the projector (``embeddings/eval``).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from graphneg.graph import check_embeddings, check_labels
from graphneg.models.metric import EmbeddingEvalMixin
from graphneg.models.projector import MLPProjector

__all__ = ["build_projector", "encoder_dim", "knn_loo_accuracy", "negative_pair_mask"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine")
SCORE_NAMES = ("similarity", "uncertainty", "representativeness", "weights")


# ---------------------------------------------------------------------------------------- helpers
def encoder_dim(encoder: nn.Module) -> int:
    """Output size of an encoder: its ``embedding_dim`` (:class:`~graphneg.models.SmallCNN`, whose
    ``out_channels`` is the size *before* its last linear layer) or else its ``out_channels``
    (:class:`~graphneg.models.resnet.CifarResNet`, :class:`~graphneg.models.gin.GINEncoder`)."""
    for attr in ("embedding_dim", "out_channels"):
        value = getattr(encoder, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    raise ValueError(
        f"cannot tell the output size of the encoder {type(encoder).__name__}: it has no positive int "
        "attribute 'embedding_dim' or 'out_channels'; set one on the encoder or pass an explicit "
        "projector module (model.init_args.projector)"
    )


def build_projector(in_dim: int, dims: Sequence[int], batch_norm: bool = True) -> nn.Module:
    """Projection head ``in_dim -> dims[0] -> ... -> dims[-1]`` (an :class:`MLPProjector`).

    ``dims = (hidden, out)`` is SimCLR's ``W2 relu(W1 h)`` (Chen et al. 2020, Sec. 2.1); with
    ``batch_norm`` and ``(512, 128)`` it is HCL's image head (official code ``image/model.py``);
    without batch norm and ``(D, D)`` GraphCL's ``proj_head`` (Linear-ReLU-Linear). ``dims = ()``
    gives no head (``nn.Identity``: the loss sees the encoder output).
    """
    dims = [int(d) for d in dims]
    if not dims:
        return nn.Identity()
    if any(d < 1 for d in dims):
        raise ValueError(f"projector_dims must be positive layer widths, got {dims}")
    hidden = dims[:-1]
    if hidden and any(h != hidden[0] for h in hidden):
        raise ValueError(
            f"projector_dims {dims}: all hidden layers of the MLP projector share one width "
            "(e.g. [512, 512, 128]); pass a custom projector module for other shapes"
        )
    return MLPProjector(in_dim, hidden_dim=hidden[0] if hidden else dims[-1], out_dim=dims[-1],
                        num_layers=len(dims), batch_norm=batch_norm)


def negative_pair_mask(batch_size: int, labels: Optional[Tensor] = None,
                       device: Optional[torch.device] = None) -> Tensor:
    """``[2B, 2B]`` bool mask of the negatives of a two-view batch (rows: anchors ``[z1; z2]``).

    As :func:`graphneg.losses.contrastive.contrastive_pairs`: anchor ``i``'s negatives are all other
    rows except its positive ``(i + B) mod 2B``; with labels, same-class rows are excluded too.
    """
    n = 2 * batch_size
    rows = torch.arange(n, device=device)
    mask = (rows[None, :] != rows[:, None]) & (rows[None, :] != ((rows + batch_size) % n)[:, None])
    if labels is not None:
        lab = torch.cat([labels, labels]).to(mask.device)
        mask &= lab[:, None] != lab[None, :]
    return mask


@torch.no_grad()
def knn_loo_accuracy(embeddings: Tensor, labels: Tensor, k: int = 200, temperature: float = 0.1,
                     chunk_size: int = 1024) -> float:
    r"""Leave-one-out weighted-kNN accuracy of a labelled embedding set.

    Every sample is classified by its ``k`` nearest *other* samples with the rule of Wu et al.
    (CVPR 2018, Sec. 3.4; :func:`graphneg.metrics.probe.knn_predict`): weights ``exp(cos / t)``,
    class score the sum of the weights, lowest class id on ties. The fallback monitor of
    :class:`ContrastiveModule` when no training reference set is available. ``O(chunk * N)``
    memory; runs on the embeddings' device.
    """
    check_embeddings(embeddings, "embeddings")
    n = embeddings.size(0)
    labels = check_labels(labels, n, "labels").to(embeddings.device).long()
    if n < 2:
        raise ValueError("leave-one-out kNN needs at least two embeddings")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    k = min(k, n - 1)
    c = int(labels.max()) + 1
    bank = F.normalize(embeddings.float(), dim=1)
    preds = []
    for start in range(0, n, chunk_size):  # chunks of queries, not samples
        q = bank[start:start + chunk_size]
        sim = q @ bank.t()
        own = torch.arange(q.size(0), device=q.device)
        sim[own, own + start] = float("-inf")  # exclude the query itself
        top_sim, top_idx = sim.topk(k, dim=1)
        scores = torch.zeros(q.size(0), c, device=q.device)
        scores.scatter_add_(1, labels[top_idx], (top_sim / temperature).exp())
        preds.append(scores.argmax(dim=1))
    return float((torch.cat(preds) == labels).float().mean())


def _normal_tensor(t: Tensor) -> Tensor:
    """A regular (autograd-capable) copy of a tensor made under ``torch.inference_mode``."""
    if t.is_inference():
        with torch.inference_mode(False):
            return t.clone()
    return t


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value.lower()


# ------------------------------------------------------------------------------------------- base
class _ContrastiveBase(EmbeddingEvalMixin, L.LightningModule):
    """Shared machinery: two-view training step, optimiser / scheduler, score histograms, probes.

    Subclasses define :meth:`embed`, :meth:`_split_batch` (training batch -> views, labels, size),
    :meth:`_eval_batch` (evaluation batch -> inputs, labels) and :meth:`evaluate`.
    """

    _ignored_init_args = ("encoder", "loss", "projector")

    def _init_common(self, encoder: nn.Module, loss: nn.Module, projector: Optional[nn.Module],
                     projector_dims: Optional[Sequence[int]], projector_batch_norm: bool) -> None:
        hp = self.hparams
        if not isinstance(encoder, nn.Module):
            raise ValueError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
        if not isinstance(loss, nn.Module):
            raise ValueError(
                f"loss must be a contrastive loss module taking (z1, z2), got {type(loss).__name__}; "
                "e.g. graphneg.losses.UnReMixLoss"
            )
        _check_choice("optimizer", hp.optimizer, OPTIMIZERS)
        _check_choice("scheduler", hp.scheduler, SCHEDULERS)
        if not hp.lr > 0:
            raise ValueError(f"lr must be > 0, got {hp.lr}")
        if hp.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {hp.weight_decay}")
        self.encoder = encoder
        self.loss = loss
        if projector is None:
            dims = projector_dims
            if dims is None:  # GraphCL: Linear(D, D) - ReLU - Linear(D, D)
                d = encoder_dim(encoder)
                dims = (d, d)
            projector = build_projector(encoder_dim(encoder) if len(dims) else 0, dims,
                                        projector_batch_norm)
        self.projector = projector
        self.probe_results: Dict[str, float] = {}
        self._last_train = None  # (batch size, labels or None) of the last training batch
        self._eval_reset()

    # ------------------------------------------------------------------ model
    def embed(self, x) -> Tensor:  # pragma: no cover - overridden
        raise TypeError(f"{type(self).__name__} must define embed()")

    def forward(self, x) -> Tensor:
        """The representation ``h = f(x)`` used for every downstream evaluation."""
        return self.embed(x)

    def project(self, h: Tensor) -> Tensor:
        """The projection ``z = g(h)`` the loss is applied to."""
        return self.projector(h)

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx: int) -> Optional[Tensor]:
        v1, v2, labels, size = self._split_batch(batch)
        if size < 2:
            # one sample has no negative; happens for a last incomplete batch (use drop_last=True)
            return None
        z1 = self.project(self.embed(v1))
        z2 = self.project(self.embed(v2))
        if self.hparams.supervised:
            if labels is None:
                raise ValueError(
                    "supervised=True passes the batch labels to the loss, but the training batches carry "
                    "none: use a DataModule yielding (view1, view2, labels) or set supervised=false"
                )
            loss = self.loss(z1, z2, labels)
        else:
            loss = self.loss(z1, z2)
        self._last_train = (size, labels if self.hparams.supervised else None)
        with torch.no_grad():
            pos_cos = F.cosine_similarity(z1.detach(), z2.detach(), dim=-1).mean()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        self.log("train/pos_cos", pos_cos, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.hparams.log_histograms:
            self._log_score_histograms()

    def _experiments(self, method: str) -> List[Any]:
        return [lg.experiment for lg in self.loggers if hasattr(lg.experiment, method)]

    def _log_score_histograms(self) -> None:
        """Histograms of the loss's ``last_scores`` (UnReMix) over the last batch's negative pairs."""
        scores = getattr(self.loss, "last_scores", None)
        experiments = self._experiments("add_histogram")
        if not scores or not experiments or self._last_train is None:
            return
        size, labels = self._last_train
        for name in SCORE_NAMES:
            t = scores.get(name)
            if t is None:
                continue
            if t.dim() == 2 and t.shape == (2 * size, 2 * size):
                values = t[negative_pair_mask(size, labels, t.device)]
            else:  # extra negatives or another layout: every entry
                values = t.reshape(-1)
            values = values.detach().float().cpu()
            for exp in experiments:
                exp.add_histogram(f"unremix/{name}", values, global_step=self.current_epoch)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        name = hp.optimizer.lower()
        if name == "adam":  # HCL image/main.py: Adam(lr=1e-3, weight_decay=1e-6)
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        elif name == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if hp.scheduler.lower() == "none":
            return opt
        # cosine decay per optimisation step over the whole run (SimCLR Sec. B.1: cosine decay)
        total = 1
        if self._trainer is not None:
            steps = float(self.trainer.estimated_stepping_batches)
            if not math.isfinite(steps):
                raise ValueError(
                    "scheduler='cosine' decays over the whole run, which has no end: set trainer.max_epochs "
                    "or trainer.max_steps, or use scheduler='none'"
                )
            total = max(1, int(steps))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation helpers
    def _to_device(self, x):
        return x.to(self.device) if hasattr(x, "to") else x

    def _embed_loader(self, loader: Iterable, limit: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """Embeddings and labels of every batch of ``loader`` (first ``limit`` samples)."""
        embs, labs, kept = [], [], 0
        for batch in loader:
            x, y = self._eval_batch(batch)
            emb = self.embed(self._to_device(x)).detach()
            y = y.reshape(-1).to(emb.device)
            if limit is not None:
                emb, y = emb[: limit - kept], y[: limit - kept]
            embs.append(emb)
            labs.append(y)
            kept += emb.size(0)
            if limit is not None and kept >= limit:
                break
        if not embs:
            raise ValueError("the evaluation loader yielded no batch")
        return torch.cat(embs), torch.cat(labs)

    def _datamodule(self):
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def _log_direct(self, metrics: Dict[str, float]) -> None:
        """Write metrics to the loggers outside the hooks where ``self.log`` is allowed."""
        for lg in self.loggers:
            lg.log_metrics(metrics, step=self.global_step)

    def _gather(self, t: Tensor) -> Tensor:
        if self._trainer is not None and self.trainer.world_size > 1:
            return self.all_gather(t).flatten(0, 1)
        return t

    def on_train_end(self) -> None:
        """Run the end-of-fit downstream evaluation (``probe/*``) and log the projector snapshot."""
        if self.hparams.probe_at_end:
            dm = self._datamodule()
            if dm is None:
                rank_zero_warn("probe_at_end needs the DataModule of the fit; no probe was run")
            else:
                results = self.evaluate(dm)
                self.probe_results = results
                self._log_direct({f"probe/{k}": v for k, v in results.items()})
        self._log_projector()

    def _log_projector(self) -> None:
        if self.hparams.projector_max > 0:
            super()._log_projector()

    def evaluate(self, datamodule) -> Dict[str, float]:  # pragma: no cover - overridden
        raise TypeError(f"{type(self).__name__} must define evaluate()")
