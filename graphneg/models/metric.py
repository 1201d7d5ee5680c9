"""Deep metric learning as a LightningModule, optionally with a hard-negative generator (GCA-HNG)."""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from graphneg.distributed import gather
from graphneg.validation import check_batch, check_ks, value_checks
from graphneg.metrics.retrieval import retrieval_metrics


@torch.no_grad()
def generator_diagnostics(out, fixed_lambda: Optional[float] = None, scale: Optional[Tensor] = None) -> Dict[str, Tensor]:
    r"""What a GCA-HNG batch did, as scalar tensors (no host sync); logged per epoch by
    :class:`MetricLearningModule`.

    ``out`` is a :class:`graphneg.nn.GeneratedNegatives`. With ``g`` a synthetic negative (row of
    ``out.x``) of anchor ``a`` mixed from the pairs ``(a, n)`` of its group with weights ``w``:

    * ``cos_anchor_synthetic`` = mean over ``g`` of :math:`\cos(z_a, \tilde z_g)`;
    * ``cos_anchor_source`` = mean over ``g`` of :math:`\sum_{(a,n)\in g} w_{an} \cos(z_a, z_n)`, the
      same average for the real negatives the synthetic ones were built from;
    * ``hardness_gain`` = their difference (> 0: the synthetic negatives are closer to their anchors,
      i.e. harder, than their sources);
    * ``hard_fraction``: share of pairs on the "hard" branch :math:`d^+ < d^-` (elsewhere the real
      negative is returned unchanged);
    * ``lambda_mean`` / ``lambda_std``: the interpolation vectors used, over pairs and channels (the
      constant when ``fixed_lambda`` is set); ``lambda_scale``: :math:`e^{-\alpha/J_{mean}}` (``scale``).

    Reconstructed for graphneg (not in the official code): the quantities the GCA-HNG paper argues
    about (harder yet label-preserving negatives, adaptive :math:`\lambda`), measured directly.
    """
    emb = out.graph.x.detach()  # the (global) batch the generator ran on
    x = out.x.detach()
    pairs = out.pairs
    cos_syn = torch.nn.functional.cosine_similarity(emb.index_select(0, out.anchor_index), x, dim=1)
    cos_pair = torch.nn.functional.cosine_similarity(
        emb.index_select(0, pairs.anchor), emb.index_select(0, pairs.negative), dim=1)
    groups = x.size(0)
    cos_src = torch.zeros(groups, dtype=cos_pair.dtype, device=cos_pair.device).index_add_(
        0, pairs.group, pairs.weight.detach().to(cos_pair.dtype) * cos_pair)
    if fixed_lambda is None:
        lam = out.gnn.lam.detach().index_select(0, pairs.edge)  # the pairs' interpolation vectors
        lam_mean, lam_std = lam.mean(), lam.std()
    else:
        lam_mean, lam_std = emb.new_tensor(float(fixed_lambda)), emb.new_tensor(0.0)
    res = {
        "cos_anchor_synthetic": cos_syn.mean(),
        "cos_anchor_source": cos_src.mean(),
        "hardness_gain": cos_syn.mean() - cos_src.mean(),
        "hard_fraction": pairs.hard.float().mean(),
        "lambda_mean": lam_mean,
        "lambda_std": lam_std,
    }
    if scale is not None:
        res["lambda_scale"] = torch.as_tensor(scale, dtype=emb.dtype, device=emb.device).detach()
    return res


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
        """All ranks' evaluation shards (graphneg.distributed.gather: shards may differ in size)."""
        if self.trainer is not None and self.trainer.world_size > 1:
            return gather(*tensors)
        return tensors

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
        synthetic_beta / classifier_weight / node_loss_weight: the weights of ``J_syn``, of the softmax
            classifier's CE and of the GNN's node CE ``J_gce`` in the three-step update (official 30, 10, 1).
        head_name: the encoder attribute holding its last embedding layer.
        ks: Recall@K values logged each validation epoch.
        eval_metric: ``"cosine"`` or ``"euclidean"`` retrieval.
        eval_nmi: also log NMI (k-means) each validation epoch.
        projector_max: samples in the TensorBoard projector snapshot.
        scheduler: ``"cosine"`` (every optimiser, ``T_max`` = max_epochs), ``"none"``, or ``"step"``: the
            official GCA-HNG ``train.py`` schedule (``LR_POLICY: step``): encoder ``StepLR(lr_step_size,
            lr_gamma)`` (``METRIC_DECAY_STEPS`` / ``METRIC_GAMMA``), generator cosine over max_epochs,
            classifier constant.
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
        self.automatic_optimization = False
        self.encoder, self.loss, self.generator = encoder, loss, generator
        if scheduler not in ("cosine", "none", "step"):
            raise ValueError(f"scheduler must be 'cosine', 'step' or 'none', got {scheduler!r}")
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
        """The step's value checks, once, with one host sync (the building blocks skip theirs)."""
        from graphneg.losses.metric import MultiSimilarityLoss, NPairLoss, TripletMarginLoss

        limits = [getattr(m, "num_classes", None) for m in (self.generator, self.loss)]
        limits = [c for c in limits if isinstance(c, int)]
        pair_loss = isinstance(self.loss, (MultiSimilarityLoss, NPairLoss, TripletMarginLoss))
        return check_batch(emb, y, min(limits) if limits else None, "encoder output", "this training batch",
                           need_positive=pair_loss)

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
        # missing from a checkpoint and a resumed run would diverge. Here both runs see the same state.
        self._set_warmup()
        if self.generator is not None:
            self._roll_running_means()
        scheds = self.lr_schedulers()
        for s in (scheds if isinstance(scheds, list) else [scheds]) if scheds is not None else []:
            while s.last_epoch < self.current_epoch:
                with warnings.catch_warnings():
                    # resumed runs step before this process's first optimizer.step(): the schedule's own step,
                    # not the misuse torch warns about
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
                    s.step()

    # ------------------------------------------------------------------ GCA-HNG three-step update
    def _init_generator_state(self, num_classes: Optional[int]) -> None:
        gen = self.generator
        if num_classes is None:
            num_classes = getattr(gen, "num_classes", None)
        if num_classes is None or int(num_classes) < 2:
            raise ValueError(
                "a generator needs num_classes (the number of training classes) for its softmax "
                f"classifier, got {num_classes!r}"
            )
        dim = getattr(gen, "dim", None)
        if dim is None:
            raise ValueError("the generator must expose `dim` (its embedding size)")
        # official `softmax_classifier`: Linear(D, num_classes) trained on detached embeddings
        self.classifier = nn.Linear(int(dim), int(num_classes))
        # running means of the real-pair metric loss (J_mean, official J_avg) and of the generator
        # loss (J_gen_mean): the mean over the previous epoch, 1e6 during the first (official
        # AverageMeter(1e6) reset at each epoch end). Buffers, so checkpoints carry them.
        for name in ("j_mean", "j_gen_mean"):
            self.register_buffer(name, torch.tensor(1e6))
            self.register_buffer(name + "_sum", torch.tensor(0.0))
            self.register_buffer(name + "_count", torch.tensor(0.0))
        self.rw_generator = torch.Generator()
        self.rw_generator.manual_seed(0)

    def _accumulate(self, name: str, value: Tensor) -> None:
        # official: J_avg.update(max(jm.item(), 1e-6)); no host sync here
        getattr(self, name + "_sum").add_(value.detach().clamp_min(1e-6).to(torch.float32))
        getattr(self, name + "_count").add_(1.0)

    def _roll_running_means(self) -> None:
        for name in ("j_mean", "j_gen_mean"):
            count, total = getattr(self, name + "_count"), getattr(self, name + "_sum")
            mean = torch.where(count > 0, total / count.clamp_min(1.0), getattr(self, name))
            getattr(self, name).copy_(mean)
            total.zero_()
            count.zero_()

    def _rw_generator_for(self, device) -> Optional[torch.Generator]:
        if device.type == "cpu":
            return self.rw_generator
        return None  # CUDA draws follow the global (seeded) CUDA generator

    def _generator_step(self, x: Tensor, y: Tensor) -> Tensor:
        """One GCA-HNG update, as the official ``GCA_HNG.forward`` (scripts/models.py):

        1. metric step (encoder + GNN optimisers): ``J_metric = J_m + (1 - exp(-beta / J_gen_mean))
           * J_syn + J_gce`` where ``J_m = loss(z, y)`` on real pairs, ``J_syn = loss(z, y, z~, ...)``
           on the synthetic negatives generated with detached ``lambda`` (so ``J_syn`` trains the
           encoder only) and ``J_gce`` the GNN's node classification CE (trains encoder and GNN),
           weighted by ``node_loss_weight`` (official: 1; 0 is a diagnostic ablation that keeps the
           node classification's gradient out of the encoder and the GNN);
        2. classifier step: ``classifier_weight * CE(classifier(z.detach()), y)``;
        3. GNN-only step on detached embeddings: :meth:`graphneg.nn.GCAHNG.loss` (label-preserving CE
           of the classifier on ``z~``, ``1 - cos(z_a, z~)`` and the lambda diversity term). The
           classifier's gradients from this step are discarded (zeroed before its next step).

        Gradients are clipped by value (``grad_clip``) per parameter group, as the official code.
        """
        hp = self.hparams
        opt_c, opt_s, opt_g = self.optimizers()
        gen = self.generator
        # step 1: metric
        opt_c.zero_grad()
        opt_g.zero_grad()
        emb = self.encoder(x)
        y = self._check_batch(emb, y)
        j_m = self.loss(emb, y)
        out = gen(emb, y, j_mean=self.j_mean, detach_lam=True, generator=self._rw_generator_for(emb.device))
        e_bj = torch.exp(-hp.synthetic_beta / self.j_gen_mean)
        # out.graph.x / out.graph.y: the global batch when the generator gathers (multi-GPU)
        j_syn_raw = self.loss(out.graph.x, out.graph.y, neg_embeddings=out.x, neg_labels=out.labels,
                               anchor_index=out.anchor_index)  # synthetic pairs
        j_syn = (1.0 - e_bj) * j_syn_raw
        j_gce = hp.node_loss_weight * gen.node_loss(out)
        j_metric = j_m + j_syn + j_gce
        self.manual_backward(j_metric)
        opt_c.step()  # each step clips first: see on_before_optimizer_step
        opt_g.step()
        # step 2: softmax classifier on detached embeddings
        opt_s.zero_grad()
        ce = hp.classifier_weight * torch.nn.functional.cross_entropy(self.classifier(emb.detach()), y)
        self.manual_backward(ce)
        opt_s.step()
        # step 3: generator only
        opt_g.zero_grad()
        out_g = gen(emb.detach(), y, j_mean=self.j_mean, generator=self._rw_generator_for(emb.device))
        terms = gen.loss(out_g, self.classifier)
        self.manual_backward(terms.total)
        opt_g.step()

        self._accumulate("j_mean", j_m)
        self._accumulate("j_gen_mean", terms.total)
        self.log_dict(
            {
                "train/loss": j_metric.detach(), "train/J_m": j_m.detach(), "train/J_syn": j_syn.detach(),
                "train/J_gce": j_gce.detach(), "train/J_softce": ce.detach(), "train/J_gen": terms.total.detach(),
                "train/J_gen_ce": terms.softmax_ce.detach(), "train/J_sim": terms.similarity.detach(),
                "train/J_div": terms.diversity.detach(), "train/e_bj": e_bj,
            },
            on_step=True, on_epoch=True,
        )
        diag = generator_diagnostics(out, gen.fixed_lambda, gen._scale(self.j_mean, emb))
        diag = {f"gca/{k}": v for k, v in diag.items()}
        diag["gca/loss_real"], diag["gca/loss_synthetic"] = j_m.detach(), j_syn_raw.detach()
        self.log_dict(diag, on_step=False, on_epoch=True)
        # what the epoch-end histograms need, detached: holding `out` would keep the GNN's edge
        # tensors alive until the next step
        pairs = out.pairs
        self._last_generated = (out.gnn.lam.detach().index_select(0, pairs.edge), pairs.anchor,
                                pairs.negative, pairs.hard, out.x.detach(), out.anchor_index,
                                out.graph.x.detach())  # global rows when the generator gathers
        return j_metric.detach()

    def _log_generator_histograms(self) -> None:
        last = getattr(self, "_last_generated", None)
        logger = self.logger
        if last is None or logger is None or not hasattr(logger.experiment, "add_histogram"):
            return
        lam, pair_anchor, pair_negative, _hard, x, anchor_index, emb = last
        exp = logger.experiment
        exp.add_histogram("gca/lambda", lam.flatten().cpu(), self.global_step)
        anchors = emb.index_select(0, anchor_index)
        real = (emb.index_select(0, pair_anchor) - emb.index_select(0, pair_negative)).norm(dim=1)
        synth = (anchors - x).norm(dim=1)
        exp.add_histogram("gca/anchor_negative_distance_real", real.cpu(), self.global_step)
        exp.add_histogram("gca/anchor_negative_distance_synthetic", synth.cpu(), self.global_step)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        if self.generator is not None:
            checkpoint["rw_generator_state"] = self.rw_generator.get_state()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        if self.generator is not None and "rw_generator_state" in checkpoint:
            self.rw_generator.set_state(checkpoint["rw_generator_state"])

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx: int) -> Tensor:
        # the batch is validated once (_check_batch); losses / generator / graph skip value checks
        with value_checks(False):
            return self._training_step(batch, batch_idx)

    def _training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch
        if self.generator is not None:
            return self._generator_step(x, y)
        opt = self.optimizers()
        emb = self.encoder(x)
        y = self._check_batch(emb, y)
        loss = self.loss(emb, y)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss.detach()

    def on_before_optimizer_step(self, optimizer) -> None:
        # Lightning calls this inside `opt.step()`, after mixed precision has unscaled the gradients
        # (clipping before `opt.step()` would clip the loss-scaled gradients under precision 16-mixed)
        self._clip(optimizer)

    def _clip(self, optimizer) -> None:
        """Clip ``optimizer``'s gradients by value at ``grad_clip`` (official ``clip_grad_value_``, 10.0) with
        Lightning's ``clip_gradients``: the encoder(+loss) and generator optimisers; the softmax classifier's
        step is not clipped, as in the official ``train.py``."""
        if not self.hparams.grad_clip:
            return
        if self.generator is not None and optimizer is self.optimizers(use_pl_optimizer=False)[1]:
            return
        self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="value")

    def on_train_epoch_end(self) -> None:
        if self.generator is not None:
            self._log_generator_histograms()

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
        if hp.scheduler == "step":  # official train.py: StepLR (metric), cosine (GNN), none (classifier)
            scheds = [torch.optim.lr_scheduler.StepLR(opts[0], step_size=hp.lr_step_size, gamma=hp.lr_gamma)]
            if self.generator is not None:
                scheds.append(torch.optim.lr_scheduler.CosineAnnealingLR(opts[2], T_max=t_max))
            return opts, scheds
        scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=t_max) for o in opts]
        return opts, scheds

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


__all__ = ["MetricLearningModule", "EmbeddingEvalMixin", "generator_diagnostics"]
