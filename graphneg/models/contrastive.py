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
from torch.utils.data import DataLoader

from graphneg.graph import check_embeddings, check_labels
from graphneg.validation import check_batch, check_k, value_checks
from graphneg.metrics.probe import knn_accuracy, linear_probe
from graphneg.models.metric import EmbeddingEvalMixin
from graphneg.models.projector import MLPProjector

__all__ = [
    "ContrastiveModule",
    "GraphContrastiveModule",
    "build_projector",
    "encoder_dim",
    "knn_loo_accuracy",
    "negative_pair_mask",
]

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
    k = check_k(k, "k")
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
        # the batch is validated once (check_batch, one host sync); the loss skips its value checks
        with value_checks(False):
            return self._training_step(batch, batch_idx)

    def _training_step(self, batch, batch_idx: int) -> Optional[Tensor]:
        v1, v2, labels, size = self._split_batch(batch)
        if size < 2:
            # one sample has no negative; happens for a last incomplete batch (use drop_last=True)
            return None
        z1 = self.project(self.embed(v1))
        z2 = self.project(self.embed(v2))
        check_batch(z1, labels if self.hparams.supervised else None, name="projected view 1",
                    others=(("projected view 2", z2),))
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


# ----------------------------------------------------------------------------------------- images
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


# ----------------------------------------------------------------------------------------- graphs
class GraphContrastiveModule(_ContrastiveBase):
    r"""Graph contrastive learning (GraphCL style) with any two-view contrastive loss.

    Training batches are pairs ``(view1, view2)`` of :class:`~torch_geometric.data.Batch` (two
    augmentations of the same graphs, :class:`graphneg.data.tu.TUDataModule`); graph embeddings
    ``h = encoder.forward_data(view)`` (:class:`graphneg.models.GINEncoder`: sum-pooled, concatenated
    layer readouts as InfoGraph / GraphCL) go through the head ``g`` (GraphCL ``proj_head``:
    ``Linear(D, D) - ReLU - Linear(D, D)`` by default) into the loss (You et al., NeurIPS 2020,
    Sec. 3.2, eq. 3 is NT-Xent; HCL's graph experiments swap in their loss on the same
    embeddings). With ``supervised=True`` the graph labels ``view1.y`` reach the loss.

    Evaluation (InfoGraph / GraphCL / HCL protocol): the validation / test loaders yield all graphs;
    their encoder embeddings go to :func:`graphneg.metrics.graph_protocol.svc_protocol`. Validation
    runs every ``eval_every`` epochs (and at the last epoch) with a fast setting (``val_folds``,
    ``val_C_grid``), logging ``val/svc_acc`` / ``val/svc_std``; with ``eval="knn"`` it logs the
    leave-one-out kNN accuracy ``val/knn_top1`` instead (cheap, for large datasets). The test stage
    and the end of fit (``probe_at_end``) run the full protocol (``test_folds``, ``C_grid``):
    ``test/svc_acc`` / ``probe/svc_acc`` with their std.

    Args:
        encoder: graph encoder with ``forward_data(batch) -> [G, D]`` (or ``forward(x, edge_index,
            batch)``); its ``in_channels`` must equal the DataModule's ``num_features`` (checked).
        loss: a two-view contrastive loss.
        projector: projection head; ``None`` builds one from ``projector_dims``.
        projector_dims: widths of the default head (``None``: ``(D, D)`` as GraphCL; ``()``: none).
        projector_batch_norm: BatchNorm1d in the default head's hidden layer (GraphCL: no).
        lr, weight_decay, optimizer, momentum, scheduler: as :class:`ContrastiveModule`
            (GraphCL / HCL graph: Adam, lr 1e-3 here as the issue asks, no weight decay).
        supervised: pass the graph labels to the loss.
        eval: ``"svc"`` or ``"knn"`` (validation monitor).
        eval_every: validate every this many epochs.
        val_folds, val_C_grid: the fast validation protocol.
        test_folds, C_grid: the full protocol (InfoGraph: 10 folds, ``C`` in ``{1e-3, ..., 1e3}``).
        svc_kernel: SVC kernel (the reference's default ``"rbf"``).
        knn_k, knn_t: the ``eval="knn"`` monitor.
        probe_at_end, log_histograms, projector_max, seed: as :class:`ContrastiveModule`
            (``seed`` seeds the CV folds).
    """

    def __init__(
        self,
        encoder: nn.Module,
        loss: nn.Module,
        projector: Optional[nn.Module] = None,
        projector_dims: Optional[Sequence[int]] = None,
        projector_batch_norm: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        momentum: float = 0.9,
        scheduler: str = "none",
        supervised: bool = False,
        eval: str = "svc",
        eval_every: int = 1,
        val_folds: int = 5,
        val_C_grid: Sequence[float] = (0.1, 1.0, 10.0),
        test_folds: int = 10,
        C_grid: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0),
        svc_kernel: str = "rbf",
        knn_k: int = 20,
        knn_t: float = 0.1,
        probe_at_end: bool = True,
        log_histograms: bool = True,
        projector_max: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=list(self._ignored_init_args))
        _check_choice("eval", eval, ("svc", "knn"))
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(f"eval_every must be a positive int (epochs), got {eval_every!r}")
        for name, folds in (("val_folds", val_folds), ("test_folds", test_folds)):
            if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
                raise ValueError(f"{name} must be an int >= 2, got {folds!r}")
        for name, grid in (("val_C_grid", val_C_grid), ("C_grid", C_grid)):
            if len(grid) == 0 or any(float(c) <= 0 for c in grid):
                raise ValueError(f"{name} must hold positive C values, got {list(grid)}")
        self._init_common(encoder, loss, projector, projector_dims, projector_batch_norm)

    # ------------------------------------------------------------------ batches
    def embed(self, data) -> Tensor:
        if callable(getattr(self.encoder, "forward_data", None)):
            return self.encoder.forward_data(data)
        return self.encoder(data.x, data.edge_index, getattr(data, "batch", None))

    @staticmethod
    def _split_batch(batch):
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            raise ValueError(
                "GraphContrastiveModule expects training batches (view1, view2) of torch_geometric Batch "
                "objects (graphneg.data.tu.TUDataModule's train loader)"
            )
        v1, v2 = batch
        n1, n2 = getattr(v1, "num_graphs", None), getattr(v2, "num_graphs", None)
        if n1 is None or n1 != n2:
            raise ValueError(f"the two views must hold the same graphs, got {n1} and {n2} graphs")
        labels = getattr(v1, "y", None)
        if labels is not None:
            labels = labels.reshape(-1)
        return v1, v2, labels, int(n1)

    @staticmethod
    def _eval_batch(batch):
        y = getattr(batch, "y", None)
        if y is None:
            raise ValueError("evaluation graphs need graph labels y for the SVC protocol")
        return batch, y

    def setup(self, stage: Optional[str] = None) -> None:
        dm = self._datamodule()
        features = getattr(dm, "num_features", None) if dm is not None else None
        in_ch = getattr(self.encoder, "in_channels", None)
        if isinstance(features, int) and isinstance(in_ch, int) and features != in_ch:
            name = getattr(dm, "name", type(dm).__name__)
            raise ValueError(
                f"the encoder's in_channels={in_ch} does not match the node features of {name} "
                f"(num_features={features}); set model.init_args.encoder.init_args.in_channels={features}"
            )

    # ------------------------------------------------------------------ evaluation
    def _eval_reset(self) -> None:
        self._val_emb: List[Tensor] = []
        self._val_lab: List[Tensor] = []

    def _eval_epoch(self) -> bool:
        epoch = self.current_epoch + 1
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        last = max_epochs is not None and max_epochs > 0 and epoch >= max_epochs
        return epoch % self.hparams.eval_every == 0 or last

    def validation_step(self, batch, batch_idx: int) -> None:
        if self.trainer.sanity_checking or not self._eval_epoch():
            return
        x, y = self._eval_batch(batch)
        self._val_emb.append(self.embed(x).detach())
        self._val_lab.append(y.detach().reshape(-1))

    def _collected(self) -> Optional[Tuple[Tensor, Tensor]]:
        if not self._val_emb:
            return None
        emb, lab = torch.cat(self._val_emb), torch.cat(self._val_lab)
        self._eval_reset()
        return self._gather(emb), self._gather(lab)

    def _svc(self, emb: Tensor, lab: Tensor, full: bool) -> Dict[str, float]:
        from graphneg.metrics.graph_protocol import svc_protocol

        hp = self.hparams
        res = svc_protocol(emb.detach().float().cpu(), lab.detach().cpu(),
                           folds=hp.test_folds if full else hp.val_folds,
                           C_grid=tuple(hp.C_grid if full else hp.val_C_grid), seed=hp.seed,
                           kernel=hp.svc_kernel)
        return {"svc_acc": res["mean"], "svc_std": res["std"]}

    def on_validation_epoch_end(self) -> None:
        got = self._collected()
        if got is None:
            return
        emb, lab = got
        if self.hparams.eval == "knn":
            self.log("val/knn_top1", knn_loo_accuracy(emb, lab, self.hparams.knn_k, self.hparams.knn_t),
                     prog_bar=True, batch_size=emb.size(0))
        else:
            res = self._svc(emb, lab, full=False)
            self.log("val/svc_acc", res["svc_acc"], prog_bar=True, batch_size=emb.size(0))
            self.log("val/svc_std", res["svc_std"], batch_size=emb.size(0))
        self._last_eval = (_normal_tensor(emb).cpu(), _normal_tensor(lab).cpu(), None)

    def on_test_epoch_start(self) -> None:
        self._eval_reset()

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = self._eval_batch(batch)
        self._val_emb.append(self.embed(x).detach())
        self._val_lab.append(y.detach().reshape(-1))

    def on_test_epoch_end(self) -> None:
        got = self._collected()
        if got is None:
            return
        res = self._svc(*got, full=True)
        for k, v in res.items():
            self.log(f"test/{k}", v, batch_size=got[0].size(0))

    def evaluate(self, datamodule) -> Dict[str, float]:
        """Full SVC protocol on the embeddings of all graphs: ``{"svc_acc", "svc_std"}``.

        Graphs: the DataModule's test loader (else its validation loader). Also usable on an
        untrained module (the random-encoder baseline).
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                loader = (datamodule.test_dataloader() if callable(getattr(datamodule, "test_dataloader", None))
                          else datamodule.val_dataloader())
                emb, lab = self._embed_loader(loader)
            return self._svc(emb, lab, full=True)
        finally:
            self.train(was_training)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.embed(batch)
