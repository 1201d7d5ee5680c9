"""Deep metric learning as a LightningModule, optionally with a hard-negative generator (GCA-HNG)."""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from graphneg.distributed import gather_layout, gather_rows
from graphneg.losses.gca_hng import GCAHNGObjective, generator_diagnostics  # noqa: F401  (public here too)
from graphneg.metrics.retrieval import retrieval_metrics
from graphneg.validation import check_batch, check_ks, value_checks


class EmbeddingEvalMixin:
    """Collects validation/test embeddings and logs retrieval metrics + a projector snapshot.

    Expects ``self.embed(x)``; batches are ``(x, labels)``. Metrics are computed once per epoch on the
    whole (gathered) evaluation set with :func:`graphneg.metrics.retrieval_metrics`, which searches
    neighbours in chunks (bounded memory: SOP's 60,502 test images need well under 1 GiB beyond the
    embeddings, see ``experiments/bench_retrieval_eval.py``).

    Protocols: with one evaluation loader, every sample is a query searched against all others (CUB,
    Cars, SOP; official ``scripts/eval_utils.py::evaluate_retrieval``). With two loaders
    (``dataloader_idx`` 0 and 1, e.g. :class:`graphneg.data.InShopDataModule`), loader 0 holds the
    queries and loader 1 the gallery (official ``evaluate_retrieval_Inshop``). The Recall@K values are
    ``hparams.ks``; the per-benchmark values are in :data:`graphneg.metrics.retrieval.RECALL_KS`.
    """

    ks: Sequence[int] = (1, 2, 4, 8)

    def _eval_reset(self) -> None:
        self._eval_emb: List[Tensor] = []
        self._eval_lab: List[Tensor] = []
        self._eval_img: List[Tensor] = []
        self._eval_ref_emb: List[Tensor] = []
        self._eval_ref_lab: List[Tensor] = []

    def _eval_collect(self, batch, dataloader_idx: int = 0) -> None:
        x, y = batch[0], batch[-1]
        emb = self.embed(x)
        if dataloader_idx == 1:  # the gallery of a query/gallery protocol
            self._eval_ref_emb.append(emb.detach())
            self._eval_ref_lab.append(y.detach())
            return
        if dataloader_idx != 0:
            raise ValueError(
                f"evaluation got a loader with dataloader_idx={dataloader_idx}; expected one loader (queries "
                "= gallery) or two ([query_loader, gallery_loader])"
            )
        self._eval_emb.append(emb.detach())
        self._eval_lab.append(y.detach())
        kept = sum(t.size(0) for t in self._eval_img)
        if x.dim() == 4 and x.size(-1) <= 64 and kept < self.hparams.projector_max:
            self._eval_img.append(x[: self.hparams.projector_max - kept].detach().cpu())

    def _gather(self, *tensors: Tensor):
        """All ranks' evaluation shards (rows of equal count per call), concatenated in rank order with
        :func:`graphneg.distributed.gather_layout` / :func:`~graphneg.distributed.gather_rows`: shards
        may differ in size between ranks; gathered only when the Trainer runs several processes."""
        several = self.trainer is not None and self.trainer.world_size > 1
        out = gather_rows(gather_layout(tensors[0].size(0), several, tensors[0].device), *tensors)
        return out if isinstance(out, tuple) else (out,)

    def _eval_finish(self, stage: str) -> Optional[Dict[str, float]]:
        if not getattr(self, "_eval_emb", None):
            return None
        emb, lab = self._gather(torch.cat(self._eval_emb), torch.cat(self._eval_lab))
        ref_emb = ref_lab = None
        if self._eval_ref_emb:
            ref_emb, ref_lab = self._gather(torch.cat(self._eval_ref_emb), torch.cat(self._eval_ref_lab))
        res = retrieval_metrics(
            emb, lab, ks=self.hparams.ks, ref_embeddings=ref_emb, ref_labels=ref_lab,
            metric=self.hparams.eval_metric, nmi=self.hparams.eval_nmi,
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


def _constant(epoch: int) -> float:
    return 1.0


#: the learning-rate tags LearningRateMonitor logs (the ``name`` of each scheduler config)
LR_NAMES = ("lr/encoder", "lr/classifier", "lr/generator")

# state_dict keys of checkpoints written before GCA-HNG's state moved into `objective`
_LEGACY_PREFIXES = ("generator.", "classifier.", "j_mean", "j_gen_mean")


class MetricLearningModule(EmbeddingEvalMixin, L.LightningModule):
    """Deep metric learning: an encoder trained with a metric loss on C x m batches.

    With ``generator=None`` each step is ``loss(encoder(x), y)`` under Lightning's automatic
    optimisation, so the Trainer's ``gradient_clip_val``, ``accumulate_grad_batches`` and ``max_steps``
    work as Lightning documents. With a hard-negative generator (:class:`graphneg.nn.GCAHNG`) each step
    is the official three-step GCA-HNG update of :class:`graphneg.losses.GCAHNGObjective` (held as
    :attr:`objective`; :attr:`generator` and :attr:`classifier` are its parts), with one optimiser per
    parameter group as the official ``train.py`` (manual optimisation, see :meth:`configure_optimizers`).

    Steps: ``trainer.global_step`` counts training batches in both modes. With a generator the encoder's
    optimiser step is the counted one; the classifier's and the generator's steps go through the same
    strategy / precision path (mixed-precision unscaling, ``on_before_optimizer_step``) without
    Lightning's manual-optimisation step counter, which otherwise counts every ``optimizer.step()``
    (Lightning issue #17958: 4 per batch here). Checkpoint names, logged scalars and histograms all sit on
    that one axis.

    Learning-rate tags (``LearningRateMonitor``): ``lr/encoder``, and with a generator ``lr/classifier``
    and ``lr/generator`` (an optimiser with several parameter groups, e.g. a loss with proxies, gets
    ``lr/encoder/pg1``, ``lr/encoder/pg2``).

    Args:
        encoder: image -> embedding network, e.g. :class:`graphneg.models.SmallCNN`.
        loss: a metric loss taking ``(embeddings, labels)``: a graphneg loss or a
            pytorch-metric-learning loss (with a generator it receives the synthetic negatives, see
            :class:`graphneg.losses.GCAHNGObjective`).
        generator: optional hard-negative generator.
        num_classes: training classes (needed by the generator's softmax classifier; default the
            generator's ``num_classes``).
        lr / weight_decay: AdamW for the encoder and the loss's parameters (e.g. proxies).
        generator_lr / classifier_lr: AdamW for the generator and the softmax classifier.
        grad_clip: gradient value clipping (official ``clip_grad_value_``, 10.0) of the encoder(+loss) and
            generator steps; ``None`` disables. Without a generator it applies when the Trainer sets no
            ``gradient_clip_val`` (the Trainer's setting replaces it).
        warmup_epochs: epochs during which only the encoder's head (``head_name``) trains.
        synthetic_beta / classifier_weight / node_loss_weight: the weights of ``J_syn``, of the softmax
            classifier's CE and of the GNN's node CE ``J_gce`` in the three-step update (official 30, 10, 1).
        head_name: the encoder attribute holding its last embedding layer.
        ks: Recall@K values logged each validation epoch.
        eval_metric: ``"cosine"`` or ``"euclidean"`` retrieval.
        eval_nmi: also log NMI (k-means) each validation epoch.
        projector_max: samples in the TensorBoard projector snapshot.
        scheduler: ``"cosine"`` (every optimiser, ``T_max`` = max_epochs), ``"none"`` (constant), or
            ``"step"``: the official GCA-HNG ``train.py`` schedule (``LR_POLICY: step``): encoder
            ``StepLR(lr_step_size, lr_gamma)`` (``METRIC_DECAY_STEPS`` / ``METRIC_GAMMA``), generator cosine
            over max_epochs, classifier constant.
        lr_step_size / lr_gamma: the ``"step"`` schedule's period (epochs) and factor.
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
        node_loss_weight: float = 1.0,
        ks: Sequence[int] = (1, 2, 4, 8),
        eval_metric: str = "cosine",
        eval_nmi: bool = True,
        projector_max: int = 1000,
        scheduler: str = "cosine",
        lr_step_size: int = 10,
        lr_gamma: float = 0.5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "loss", "generator"])
        check_ks(ks)  # fail at construction, not after the first epoch
        if scheduler not in ("cosine", "none", "step"):
            raise ValueError(f"scheduler must be 'cosine', 'step' or 'none', got {scheduler!r}")
        if warmup_epochs > 0 and not isinstance(getattr(encoder, head_name, None), nn.Module):
            raise ValueError(
                f"warmup_epochs={warmup_epochs} freezes the encoder except its head, but the encoder has no "
                f"module attribute {head_name!r}; set head_name to its last layer's attribute name"
            )
        self.encoder = encoder
        if generator is None:
            self.objective = None
            self.loss = loss
        else:
            if num_classes is None and getattr(generator, "num_classes", None) is None:
                raise ValueError("a generator needs num_classes (the number of training classes) for its softmax "
                                 "classifier: pass num_classes=... or a generator that has num_classes")
            self.objective = GCAHNGObjective(
                generator, loss, num_classes, synthetic_beta=synthetic_beta, classifier_weight=classifier_weight,
                node_loss_weight=node_loss_weight, grad_clip=grad_clip,
            )
        # manual optimisation only for the three optimisers of GCA-HNG
        self.automatic_optimization = generator is None
        self._eval_reset()

    # ------------------------------------------------------------------ parts
    @property
    def loss(self) -> nn.Module:
        """The metric loss (``objective.loss`` with a generator)."""
        return self._modules["loss"] if self.objective is None else self.objective.loss

    @property
    def generator(self) -> Optional[nn.Module]:
        """The hard-negative generator (``objective.generator``), or ``None``."""
        return None if self.objective is None else self.objective.generator

    @property
    def classifier(self) -> Optional[nn.Module]:
        """GCA-HNG's softmax classifier (``objective.classifier``), or ``None`` without a generator."""
        return None if self.objective is None else self.objective.classifier

    @property
    def rw_generator(self) -> torch.Generator:
        """Deprecated: ``objective.rw_generator`` (the random-weighting draws)."""
        warnings.warn("MetricLearningModule.rw_generator is deprecated: use module.objective.rw_generator",
                      DeprecationWarning, stacklevel=2)
        return self.objective.rw_generator

    # ------------------------------------------------------------------ model
    def embed(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def _check_batch(self, emb: Tensor, y: Tensor) -> Tensor:
        """The step's value checks, once, with one host sync (the building blocks skip theirs). What the
        loss needs is read from its ``requires_positives`` attribute (graphneg's metric-loss contract;
        a loss without it, e.g. a pytorch-metric-learning loss, skips anchors without positives)."""
        limits = [getattr(m, "num_classes", None) for m in (self.generator, self.loss)]
        limits = [c for c in limits if isinstance(c, int)]
        return check_batch(emb, y, min(limits) if limits else None, "encoder output", "this training batch",
                           need_positive=bool(getattr(self.loss, "requires_positives", False)))

    def _set_warmup(self) -> None:
        if self.hparams.warmup_epochs <= 0:
            return
        head = set(getattr(self.encoder, self.hparams.head_name).parameters())
        freeze = self.current_epoch < self.hparams.warmup_epochs
        for p in self.encoder.parameters():
            if p not in head:
                p.requires_grad_(not freeze)

    def on_train_epoch_start(self) -> None:
        # Epoch-boundary state changes happen here, not at epoch end: Lightning saves the epoch's
        # checkpoint on validation end, before `on_train_epoch_end`, so work done at epoch end would be
        # missing from a checkpoint and a resumed run would diverge. Here both runs see the same state,
        # and each catch-up loop runs only what is missing (a resumed run never rolls or steps twice).
        self._set_warmup()
        if self.objective is not None:
            while int(self.objective.completed_epochs) < self.current_epoch:  # once per epoch: one host sync
                self.objective.end_epoch()
        scheds = self.lr_schedulers()
        for s in (scheds if isinstance(scheds, list) else [scheds]) if scheds is not None else []:
            while s.last_epoch < self.current_epoch:
                with warnings.catch_warnings():
                    # resumed runs step before this process's first optimizer.step(): the schedule's own step,
                    # not the misuse torch warns about
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
                    s.step()

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx: int) -> Tensor:
        # the batch is validated once (_check_batch); losses / generator / graph skip value checks
        with value_checks(False):
            x, y = batch
            emb = self.encoder(x)
            y = self._check_batch(emb, y)
            if self.objective is not None:
                return self._gca_hng_step(emb, y)
            loss = self.loss(emb, y)
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def _gca_hng_step(self, emb: Tensor, y: Tensor) -> Tensor:
        """One GCA-HNG update: the three losses of :class:`graphneg.losses.GCAHNGObjective`, each followed
        by its optimiser steps (official ``GCA_HNG.forward``); gradients clipped by value in
        :meth:`on_before_optimizer_step`."""
        obj = self.objective
        opt_e, opt_c, opt_g = self.optimizers()
        # step 1: metric (encoder + generator); the encoder's step is the one global_step counts
        opt_e.zero_grad()
        opt_g.zero_grad()
        metric = obj.metric_loss(emb, y)
        self.manual_backward(metric.total)
        opt_e.step()
        self._step_uncounted(opt_g)
        # step 2: softmax classifier on detached embeddings
        opt_c.zero_grad()
        ce = obj.classifier_loss(emb, y)
        self.manual_backward(ce)
        self._step_uncounted(opt_c)
        # step 3: generator only, on detached embeddings
        opt_g.zero_grad()
        gen = obj.generator_loss(emb, y)
        self.manual_backward(gen.total)
        self._step_uncounted(opt_g)

        self.log_dict(
            {
                "train/loss": metric.total.detach(), "train/J_m": metric.real.detach(),
                "train/J_syn": metric.synthetic.detach(), "train/J_gce": metric.node.detach(),
                "train/J_softce": ce.detach(), "train/J_gen": gen.total.detach(),
                "train/J_gen_ce": gen.softmax_ce.detach(), "train/J_sim": gen.similarity.detach(),
                "train/J_div": gen.diversity.detach(), "train/e_bj": 1.0 - metric.synthetic_weight,
            },
            on_step=True, on_epoch=True,
        )
        self.log_dict({f"gca/{k}": v for k, v in obj.diagnostics(metric).items()}, on_step=False, on_epoch=True)
        # for the epoch-end histograms; detached, so the GNN's autograd graph is freed
        self._last_negatives = metric.negatives.detach()
        return metric.total.detach()

    def _step_uncounted(self, optimizer) -> None:
        """``optimizer.step()`` through the strategy and precision plugin (mixed-precision unscaling,
        ``on_before_optimizer_step``) without Lightning's manual-optimisation step counter, so that
        ``global_step`` counts batches (Lightning issue #17958)."""
        self.trainer.strategy.optimizer_step(getattr(optimizer, "optimizer", optimizer), closure=_no_closure)

    def _log_generator_histograms(self) -> None:
        last = getattr(self, "_last_negatives", None)
        logger = self.logger
        if last is None or logger is None or not hasattr(logger.experiment, "add_histogram"):
            return
        for name, values in self.objective.histograms(last).items():
            logger.experiment.add_histogram(f"gca/{name}", values.cpu(), self.global_step)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Read checkpoints written before GCA-HNG's state moved into :attr:`objective` (keys
        ``generator.*``, ``classifier.*``, ``j_mean*`` and the separate ``rw_generator_state``)."""
        state = checkpoint.get("state_dict", {})
        if self.objective is None or not any(k.startswith(_LEGACY_PREFIXES) for k in state):
            return
        for key in [k for k in state if k.startswith(_LEGACY_PREFIXES)]:
            state["objective." + key] = state.pop(key)
        for key in [k for k in state if k.startswith("loss.")]:
            state["objective." + key] = state.pop(key)
        if "rw_generator_state" in checkpoint:
            state["objective._extra_state"] = checkpoint["rw_generator_state"]
        state.setdefault("objective.completed_epochs", torch.tensor(int(checkpoint.get("epoch", 0)) + 1))

    def on_before_optimizer_step(self, optimizer) -> None:
        # Lightning calls this inside the optimiser step, after mixed precision has unscaled the gradients
        # (clipping before the step would clip the loss-scaled gradients under precision 16-mixed). Without
        # a generator Lightning clips in configure_gradient_clipping.
        if self.objective is not None and self.hparams.grad_clip and optimizer is not self._classifier_optimizer():
            # official: clip_grad_value_ on the encoder and the GNN, not on the softmax classifier
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="value")

    def _classifier_optimizer(self):
        return self.optimizers(use_pl_optimizer=False)[1]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Automatic optimisation: the Trainer's ``gradient_clip_val`` / ``gradient_clip_algorithm`` when set
        (Lightning's default), else value clipping at ``grad_clip``."""
        if gradient_clip_val is None and self.hparams.grad_clip:
            gradient_clip_val, gradient_clip_algorithm = self.hparams.grad_clip, "value"
        if gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                                gradient_clip_algorithm=gradient_clip_algorithm)

    def on_train_epoch_end(self) -> None:
        if self.objective is not None:
            self._log_generator_histograms()

    def configure_optimizers(self):
        """AdamW per parameter group, each with a named epoch-wise scheduler (``lr/encoder``,
        ``lr/classifier``, ``lr/generator``; ``scheduler="none"`` and the classifier under ``"step"``
        get a constant one, so that every learning rate is logged under its name)."""
        hp = self.hparams
        groups = [{"params": list(self.encoder.parameters()), "lr": hp.lr}]
        loss_params = list(self.loss.parameters())
        if loss_params:
            groups.append({"params": loss_params, "lr": hp.lr})
        opts = [torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)]
        if self.objective is not None:
            opts.append(torch.optim.AdamW(self.classifier.parameters(), lr=hp.classifier_lr))
            opts.append(
                torch.optim.AdamW(self.generator.parameters(), lr=hp.generator_lr, weight_decay=hp.weight_decay)
            )
        t_max = max(int(self.trainer.max_epochs or 1), 1) if self._trainer is not None else 1
        sched = torch.optim.lr_scheduler
        if hp.scheduler == "none":
            scheds = [sched.LambdaLR(o, _constant) for o in opts]
        elif hp.scheduler == "step":  # official train.py: StepLR (metric), none (classifier), cosine (GNN)
            scheds = [sched.StepLR(opts[0], step_size=hp.lr_step_size, gamma=hp.lr_gamma)]
            if self.objective is not None:
                scheds += [sched.LambdaLR(opts[1], _constant), sched.CosineAnnealingLR(opts[2], T_max=t_max)]
        else:
            scheds = [sched.CosineAnnealingLR(o, T_max=t_max) for o in opts]
        return opts, [{"scheduler": s, "interval": "epoch", "name": name} for s, name in zip(scheds, LR_NAMES)]

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self) -> None:
        self._eval_reset()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_collect(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._eval_finish("val")
        else:
            self._eval_reset()

    def on_test_epoch_start(self) -> None:
        self._eval_reset()

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_collect(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._eval_finish("test")

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.embed(x)

    def on_fit_end(self) -> None:
        self._log_projector()


def _no_closure() -> None:
    return None


__all__ = ["MetricLearningModule", "EmbeddingEvalMixin", "generator_diagnostics", "LR_NAMES"]
