r"""Shared base of the two-view contrastive LightningModules (images and graphs).

Both modules train ``loss(g(f(v_1)), g(f(v_2)))``: an encoder ``f`` and a projection head ``g`` on
two augmented views of the same batch (SimCLR, Chen et al., ICML 2020, Sec. 2.1; GraphCL, You et
al., NeurIPS 2020, Sec. 3.2), with any loss of :mod:`graphneg.losses.contrastive`
(:class:`~graphneg.losses.InfoNCELoss`, :class:`~graphneg.losses.DebiasedContrastiveLoss`,
:class:`~graphneg.losses.HCLLoss`, :class:`~graphneg.losses.UnReMixLoss`): switching the loss is one
config line (``--model.init_args.loss.class_path=graphneg.losses.HCLLoss``). Downstream evaluation
always uses the encoder output ``h = f(x)`` (the representation before the head), as SimCLR / HCL
(images) and InfoGraph / GraphCL / HCL (graphs) do.

* :class:`~graphneg.models.ContrastiveModule` (images, :mod:`graphneg.models.contrastive.image`);
* :class:`~graphneg.models.GraphContrastiveModule` (graphs, :mod:`graphneg.models.contrastive.graph`).

The modules hold the method; the downstream probes are callbacks (:mod:`graphneg.callbacks`:
:class:`~graphneg.callbacks.KNNProbe`, :class:`~graphneg.callbacks.LinearProbe`,
:class:`~graphneg.callbacks.SVCProbe`, listed under ``trainer.callbacks``). The modules'
``validation_step`` / ``test_step`` return ``{"embeddings": h, "labels": y}`` for them
(:meth:`ContrastiveModuleBase.embed_batch`) and run under the Trainer's inference mode.

TensorBoard (every logger with ``add_histogram`` / ``add_embedding``): ``train/loss_step``,
``train/loss_epoch``, ``train/pos_cos`` (mean cosine of the positive pairs' projections), the
learning rate (``LearningRateMonitor``, a default callback of :mod:`graphneg.cli`), the UnReMix scores
of the epoch's last batch as histograms ``unremix/similarity``, ``unremix/uncertainty``,
``unremix/representativeness`` and ``unremix/weights`` (negative pairs only, as the loss's
``negative_pair_scores()`` selects them), and at the end of fit the validation embeddings for the projector
(``embeddings/eval``); the probes add ``val/*``, ``test/*`` and ``probe/*``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphneg.models.metric import EmbeddingEvalMixin
from graphneg.models.projector import MLPProjector
from graphneg.validation import check_batch, check_choice, value_checks

__all__ = ["ContrastiveModuleBase", "build_projector", "encoder_dim"]

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


# ------------------------------------------------------------------------------------------- base
class ContrastiveModuleBase(EmbeddingEvalMixin, L.LightningModule):
    """Shared machinery: two-view training step, optimiser / scheduler, score histograms, evaluation
    step outputs for the probes of :mod:`graphneg.callbacks`, projector snapshot.

    Subclasses define :meth:`embed`, :meth:`_split_batch` (training batch -> views, labels, size) and
    :meth:`_eval_batch` (evaluation batch -> inputs, labels).
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
        check_choice("optimizer", hp.optimizer, OPTIMIZERS, ignore_case=True)
        check_choice("scheduler", hp.scheduler, SCHEDULERS, ignore_case=True)
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
        """Histograms of the loss's last scores (UnReMix) over the last batch's negative pairs.

        The loss selects the negative pairs with its own negative mask
        (:meth:`~graphneg.losses.UnReMixLoss.negative_pair_scores`), so the layout (local or
        gathered candidates, labels, extra negatives) never lets zeros of excluded pairs in.
        """
        pick = getattr(self.loss, "negative_pair_scores", None)
        experiments = self._experiments("add_histogram")
        if pick is None or not experiments:
            return
        scores = pick()
        for name in SCORE_NAMES:
            values = scores.get(name)
            if values is None:
                continue
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

    # ------------------------------------------------------------------ evaluation (outputs for the probes)
    def embed_batch(self, batch) -> Tuple[Tensor, Tensor]:
        """``(h, y)`` of an evaluation batch: the encoder embeddings ``[N, D]`` and the labels ``[N]``.

        What the probes of :mod:`graphneg.callbacks` consume; the batch is on the module's device.
        """
        x, y = self._eval_batch(batch)
        return self.embed(x), y.reshape(-1)

    def _eval_reset(self) -> None:
        self._projector_emb: List[Tensor] = []
        self._projector_lab: List[Tensor] = []
        self._projector_img: List[Tensor] = []

    def _keep_for_projector(self, emb: Tensor, lab: Tensor, x=None) -> None:
        """Keep the first ``projector_max`` evaluation embeddings (and small images) for the snapshot."""
        kept = sum(t.size(0) for t in self._projector_emb)
        room = self.hparams.projector_max - kept
        if room <= 0:
            return
        self._projector_emb.append(emb[:room].detach().cpu())
        self._projector_lab.append(lab[:room].detach().cpu())
        if isinstance(x, Tensor) and x.dim() == 4 and x.size(-1) <= 64:
            self._projector_img.append(x[:room].detach().cpu())

    def on_validation_epoch_start(self) -> None:
        self._eval_reset()

    def on_validation_epoch_end(self) -> None:
        if self._projector_emb and not self.trainer.sanity_checking:
            imgs = torch.cat(self._projector_img) if self._projector_img else None
            self._last_eval = (torch.cat(self._projector_emb), torch.cat(self._projector_lab), imgs)
        self._eval_reset()

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Dict[str, Tensor]:
        h, y = self.embed_batch(batch)
        return {"embeddings": h, "labels": y}

    def on_train_end(self) -> None:
        """Log the projector snapshot of the last validation embeddings (``embeddings/eval``)."""
        if self.hparams.projector_max > 0:
            self._log_projector()
