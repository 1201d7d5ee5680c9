r"""GCA-HNG's losses and its training objective (the official three-step update as one public object).

Peng et al., "Globally Correlation-Aware Hard Negative Generation" (IJCV / arXiv 2024); official code
github.com/PWenJay/GCA-HNG, ``scripts/models.py`` (``GCA_HNG.forward``: the three steps and their detach
points), ``train.py`` (``AverageMeter(1e6)``: per-epoch means of ``J_m`` and ``J_gen``, rolled at each
epoch end; ``max(j.item(), 1e-6)``), ``scripts/loss.py`` (``DiverseLoss``).

The model (:class:`graphneg.nn.GCAHNG`) lives in :mod:`graphneg.nn`; this module holds what trains it:

* :func:`generator_loss`, :func:`node_loss`, :func:`diversity_loss`: the generator's own terms;
* :class:`GCAHNGObjective`: the softmax classifier, the running means, the random-weighting
  ``torch.Generator`` and the three losses of one training step, usable from a plain PyTorch loop and
  from :class:`graphneg.models.MetricLearningModule` alike (the module calls it; one implementation).

A plain PyTorch loop (the module does exactly this, plus logging)::

    objective = GCAHNGObjective(GCAHNG(dim=64, num_classes=10), pml_losses.MultiSimilarityLoss())
    for x, y in loader:
        emb = encoder(x)
        opt_enc.zero_grad(); opt_gen.zero_grad()
        objective.metric_loss(emb, y).total.backward()          # 1: encoder + GNN (lambda detached)
        objective.clip_gradients(encoder, objective.generator); opt_enc.step(); opt_gen.step()
        opt_cls.zero_grad(); objective.classifier_loss(emb, y).backward(); opt_cls.step()   # 2
        opt_gen.zero_grad(); objective.generator_loss(emb, y).total.backward()              # 3
        objective.clip_gradients(objective.generator); opt_gen.step()
    objective.end_epoch()                                          # after each epoch
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphneg.losses.pml import pml_inputs
from graphneg.losses.reducers import masked_mean
from graphneg.nn.functional import gather_cosine, group_squared_deviation
from graphneg.nn.negatives import GeneratedNegatives
from graphneg.precision import full_precision, to_float32
from graphneg.validation import check_labels

__all__ = [
    "GCAHNGObjective", "GCAHNGLoss", "GCAHNGMetricLoss", "generator_loss", "node_loss", "diversity_loss",
    "generator_diagnostics", "takes_synthetic_negatives",
]

#: initial value of the running means (official ``AverageMeter(1e6)``): ``exp(-alpha / 1e6) ~ 1``
INITIAL_MEAN = 1e6


@dataclass
class GCAHNGLoss:
    """The generator's own training terms (official ``GCA_HNG.forward``, second half).

    Attributes:
        total: ``0.5 * (softmax_ce + dot_weight * similarity + div_weight * diversity)`` (``J_gen``).
        softmax_ce: ``softmax_factor * CE(classifier(x), labels)`` (official ``jsoft``).
        similarity: mean of ``1 - cos(z_a, x)`` over the synthetic negatives (``J_sim_mix``).
        diversity: ``1e-2 * DiverseLoss`` (official ``J_div``).
        negatives: the generator's output the terms were computed on (set by :class:`GCAHNGObjective`).
    """

    total: Tensor
    softmax_ce: Tensor
    similarity: Tensor
    diversity: Tensor
    negatives: Optional[GeneratedNegatives] = None


@dataclass
class GCAHNGMetricLoss:
    r"""Step 1 of the update (official ``jmetric = jm + jsyn + J_gce``).

    Attributes:
        total: :math:`J_m + (1 - e^{-\beta / \bar J_{gen}}) J_{syn} + w_{node} J_{gce}`; backpropagate this.
        real: :math:`J_m`, the metric loss on the real batch.
        synthetic: the weighted synthetic term :math:`(1 - e^{-\beta/\bar J_{gen}}) J_{syn}`.
        synthetic_raw: :math:`J_{syn}`, the metric loss with the synthetic negatives, unweighted.
        node: :math:`w_{node} J_{gce}`, the GNN's node-classification CE (trains encoder and GNN).
        synthetic_weight: :math:`1 - e^{-\beta/\bar J_{gen}}` (0-d tensor).
        negatives: the synthetic negatives (generated with ``lambda`` detached).
    """

    total: Tensor
    real: Tensor
    synthetic: Tensor
    synthetic_raw: Tensor
    node: Tensor
    synthetic_weight: Tensor
    negatives: GeneratedNegatives


def diversity_loss(lam: Tensor, edge_index: Tensor, num_nodes: int, eps: float = 1e-12) -> Tensor:
    r"""Lambda diversity term (official ``scripts/loss.py`` ``DiverseLoss``).

    .. math:: 1 - \sqrt{\frac{1}{E}\sum_{e=(r,c)} \lVert\lambda_e - \bar\lambda_r\rVert^2},\qquad
              \bar\lambda_r = \operatorname{mean}_{e=(r,\cdot)} \lambda_e,

    the mean over the out-edges of the source ``r = edge_index[0]`` (official ``scatter_mean``
    over ``r``). The squared deviation is summed over channels and divided by the number of edges
    only, as in the official code. ``eps`` clamps the radicand (the official ``sqrt`` has an
    infinite gradient at 0).
    """
    # sum_e ||lam_e - mean_r||^2 in row chunks, no [E, D] deviation tensor kept or built
    # (graphneg.nn.functional.group_squared_deviation)
    sq = group_squared_deviation(lam, edge_index[0], num_nodes)
    return 1.0 - (sq / max(lam.size(0), 1)).clamp_min(eps).sqrt()


@full_precision
def generator_loss(
    out: GeneratedNegatives, classifier: Callable[[Tensor], Tensor], softmax_factor: float = 20.0,
    dot_weight: float = 10.0, div_weight: float = 10.0,
) -> GCAHNGLoss:
    r"""The GNN-only step's loss (official ``GCA_HNG.forward``, after the classifier step).

    .. math:: J_{gen} = \tfrac12\big(s\,\mathrm{CE}(f(\tilde z), y_n)
              + w_{dot}\,\overline{(1 - \cos(z_a, \tilde z))} + w_{div}\,10^{-2} J_{div}\big)

    ``classifier`` is the external softmax classifier (official ``softmax_classifier``,
    ``Linear(D, num_classes)``) and ``y_n`` the negative's class (label preserving). The ``1 - cos``
    mean runs over the synthetic negatives, all of another class than their anchor (the official
    mean runs over ``B * C`` rows incl. own-class rows it tries to zero). Nothing is detached here:
    generate from detached embeddings for this step (:meth:`GCAHNGObjective.generator_loss` does).
    Defaults: official ``G_CUB200.yml``; :class:`GCAHNGObjective` passes the generator's own weights.
    Computed in float32 under autocast. In the padded layout (``out.mask``) the means run over the real
    rows only (the same values as on :meth:`~graphneg.nn.generator.GeneratedNegatives.compact`).
    """
    # means over the synthetic negatives: over the rows of out.mask in the padded layout (masked_mean,
    # no host sync; the same value as the compact layout's plain mean)
    ce = F.cross_entropy(classifier(out.x), out.labels, reduction="none")
    softmax_ce = softmax_factor * masked_mean(ce, out.mask)
    # == F.cosine_similarity(graph.x[anchor_index], out.x); no gathered [P, D] anchor copy
    similarity = masked_mean(1.0 - gather_cosine(out.graph.x, out.anchor_index, out.x), out.mask)
    diversity = 1e-2 * diversity_loss(to_float32(out.gnn.lam), out.graph.edge_index, out.graph.x.size(0))
    total = 0.5 * (softmax_ce + dot_weight * similarity + div_weight * diversity)
    return GCAHNGLoss(total, softmax_ce, similarity, diversity)


@full_precision
def node_loss(out: GeneratedNegatives) -> Tensor:
    """Node-classification CE of the GNN (official ``J_gce = ce2(node_pred, label)``, part of the metric
    step), in float32 under autocast."""
    return F.cross_entropy(to_float32(out.gnn.logits), out.graph.y)


@torch.no_grad()
def generator_diagnostics(out: GeneratedNegatives, fixed_lambda: Optional[float] = None,
                          scale: Optional[Tensor] = None) -> Dict[str, Tensor]:
    r"""What a GCA-HNG batch did, as scalar tensors (no host sync).

    With ``g`` a synthetic negative (row of ``out.x``) of anchor ``a`` mixed from the pairs ``(a, n)`` of
    its group with weights ``w``:

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
    rows, valid = out.mask, pairs.valid  # None in the compact layout; padding / same-class edges otherwise
    cos_syn = masked_mean(F.cosine_similarity(emb.index_select(0, out.anchor_index), x, dim=1), rows)
    cos_pair = F.cosine_similarity(emb.index_select(0, pairs.anchor), emb.index_select(0, pairs.negative), dim=1)
    # pairs of no row (padded layout: group == number of rows) go to a dropped extra row
    cos_src = torch.zeros(x.size(0) + 1, dtype=cos_pair.dtype, device=cos_pair.device).index_add_(
        0, pairs.group, pairs.weight.detach().to(cos_pair.dtype) * cos_pair)[:-1]
    cos_src = masked_mean(cos_src, rows)
    if fixed_lambda is None:
        lam = out.gnn.lam.detach().index_select(0, pairs.edge)  # the pairs' interpolation vectors
        if valid is None:
            lam_mean, lam_std = lam.mean(), lam.std()
        else:
            keep = valid[:, None].expand_as(lam)
            lam_mean = masked_mean(lam, keep)
            count = keep.sum().to(lam.dtype)
            var = torch.where(keep, (lam - lam_mean).pow(2), torch.zeros_like(lam)).sum() / (count - 1.0)
            lam_std = var.sqrt()  # unbiased, as Tensor.std
    else:
        lam_mean, lam_std = emb.new_tensor(float(fixed_lambda)), emb.new_tensor(0.0)
    res = {
        "cos_anchor_synthetic": cos_syn,
        "cos_anchor_source": cos_src,
        "hardness_gain": cos_syn - cos_src,
        "hard_fraction": masked_mean(pairs.hard.float(), valid),
        "lambda_mean": lam_mean,
        "lambda_std": lam_std,
    }
    if scale is not None:
        res["lambda_scale"] = torch.as_tensor(scale, dtype=emb.dtype, device=emb.device).detach()
    return res


def _forward_parameters(loss: Callable):
    """The parameters of ``loss``'s ``forward`` (or of the callable itself); empty when not inspectable."""
    try:
        return inspect.signature(getattr(loss, "forward", loss)).parameters
    except (TypeError, ValueError):
        return {}


def takes_synthetic_negatives(loss: Callable) -> bool:
    """Whether ``loss`` takes synthetic negatives as ``neg_embeddings / neg_labels / anchor_index``
    keywords (graphneg's metric-loss contract): its ``accepts_synthetic`` attribute, or, for a loss
    without that attribute, whether its ``forward`` has a ``neg_embeddings`` parameter. Otherwise (a
    pytorch-metric-learning loss) :class:`GCAHNGObjective` passes them as ``indices_tuple`` /
    ``ref_emb`` / ``ref_labels`` (:func:`graphneg.losses.pml_inputs`)."""
    flag = getattr(loss, "accepts_synthetic", None)
    if flag is not None:
        return bool(flag)
    return "neg_embeddings" in _forward_parameters(loss)


def _takes_keyword(loss: Callable, name: str) -> bool:
    """Whether ``loss``'s ``forward`` (or the callable itself) has a parameter ``name`` (or ``**kwargs``)."""
    params = _forward_parameters(loss)
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _nonnegative(name: str, value) -> float:
    v = float(value)
    if not v >= 0.0 or v == float("inf"):
        raise ValueError(f"GCAHNGObjective: {name} must be a finite number >= 0, got {value!r}")
    return v


class GCAHNGObjective(nn.Module):
    r"""The GCA-HNG training objective: the official three-step update's losses and state.

    Holds the generator, the metric loss, the softmax classifier (official ``softmax_classifier``,
    ``Linear(D, num_classes)``), the running means :math:`\bar J_m` / :math:`\bar J_{gen}` and the
    random-weighting ``torch.Generator``; its ``state_dict`` holds all of them, so saving it (or a
    module that contains it) and loading it resumes exactly. One training step (official
    ``GCA_HNG.forward``):

    1. :meth:`metric_loss` (encoder + generator optimisers):
       :math:`J_m + (1 - e^{-\beta/\bar J_{gen}}) J_{syn} + w_{node} J_{gce}` with :math:`J_{syn}` the
       metric loss with the synthetic negatives generated with ``lambda`` **detached** inside (the
       metric loss trains the encoder only, never the generator; :math:`J_{gce}` trains encoder and GNN
       as in the official code);
    2. :meth:`classifier_loss`: ``classifier_weight * CE(classifier(z.detach()), y)``;
    3. :meth:`generator_loss`: :func:`generator_loss` on negatives generated from ``z.detach()`` (the
       generator only; the classifier's gradients from this step are discarded by the next step's
       ``zero_grad``, as officially).

    After each epoch, :meth:`end_epoch` rolls the running means (official ``J_avg.reset()`` /
    ``J_gen.reset()``). In training mode (``.train()``, the default) every :meth:`metric_loss` /
    :meth:`generator_loss` call adds ``max(J, 1e-6)`` to the epoch's sums (official
    ``J_avg.update(max(jm.item(), 1e-6))``, here without a host sync). Gradient clipping by value before
    the encoder and generator steps (official ``clip_grad_value_(..., GRAD_L2_CLIP)``, 10) is
    :meth:`clip_gradients`; the classifier's step is not clipped (official).

    The metric loss: a graphneg metric loss (``accepts_synthetic``: called as
    ``loss(z, y, neg_embeddings=, neg_labels=, anchor_index=)``) or a pytorch-metric-learning loss
    (called as ``loss(z, y, indices_tuple, ref_emb, ref_labels)`` with :func:`graphneg.losses.pml_inputs`:
    the negatives of anchor ``a`` are exactly its synthetic negatives, its positives the real same-class
    samples); see :func:`takes_synthetic_negatives`.

    Args:
        generator: a :class:`graphneg.nn.GCAHNG` (anything with its ``forward`` / ``alpha`` /
            ``softmax_factor`` / ``dot_weight`` / ``div_weight`` / ``fixed_lambda``).
        metric_loss: the metric loss (see above).
        num_classes: training classes of the softmax classifier (default: ``generator.num_classes``).
        embedding_dim: embedding size ``D`` (default: ``generator.dim``).
        synthetic_beta: :math:`\beta` of the synthetic weight (the module's default 30).
        classifier_weight: weight of the classifier's CE (official 10).
        node_loss_weight: weight of :math:`J_{gce}` (official 1; 0 is an ablation).
        grad_clip: value of :meth:`clip_gradients` (official ``GRAD_L2_CLIP`` 10; ``None``: no clipping).
        seed: seed of the random-weighting ``torch.Generator`` (a CPU generator on every device: it draws
            one seed per generator call, copied to the device without a sync, and the generator's
            counter-based draws do the rest, so CPU and CUDA runs mix with the same weights and the
            state in the ``state_dict`` resumes them exactly).
    """

    def __init__(
        self,
        generator: nn.Module,
        metric_loss: Callable,
        num_classes: Optional[int] = None,
        embedding_dim: Optional[int] = None,
        *,
        synthetic_beta: float = 30.0,
        classifier_weight: float = 10.0,
        node_loss_weight: float = 1.0,
        grad_clip: Optional[float] = 10.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(generator, nn.Module):
            raise TypeError(f"generator must be a torch.nn.Module such as graphneg.nn.GCAHNG, got "
                            f"{type(generator).__name__}")
        if not callable(metric_loss):
            raise TypeError(f"metric_loss must be a loss module, got {type(metric_loss).__name__}")
        for name, given, own in (("num_classes", num_classes, "num_classes"), ("embedding_dim", embedding_dim, "dim")):
            have = getattr(generator, own, None)
            if given is not None and have is not None and int(given) != int(have):
                raise ValueError(f"GCAHNGObjective: {name}={given} differs from the generator's {own}={have}; "
                                 f"drop {name} or build the generator with {own}={given}")
        num_classes = num_classes if num_classes is not None else getattr(generator, "num_classes", None)
        embedding_dim = embedding_dim if embedding_dim is not None else getattr(generator, "dim", None)
        if num_classes is None or int(num_classes) < 2:
            raise ValueError("GCAHNGObjective needs num_classes >= 2 (the training classes of its softmax "
                             f"classifier), got {num_classes!r}")
        if embedding_dim is None or int(embedding_dim) < 1:
            raise ValueError(f"GCAHNGObjective needs embedding_dim (the embedding size D), got {embedding_dim!r}")
        self.generator = generator
        self.loss = metric_loss
        self.synthetic_route = "graphneg" if takes_synthetic_negatives(metric_loss) else "pml"
        self._loss_takes_mask = _takes_keyword(metric_loss, "neg_mask")
        self.num_classes, self.embedding_dim = int(num_classes), int(embedding_dim)
        self.synthetic_beta = _nonnegative("synthetic_beta", synthetic_beta)
        self.classifier_weight = _nonnegative("classifier_weight", classifier_weight)
        self.node_loss_weight = _nonnegative("node_loss_weight", node_loss_weight)
        self.grad_clip = None if grad_clip is None else _nonnegative("grad_clip", grad_clip) or None
        # official `softmax_classifier`: Linear(D, num_classes), trained on detached embeddings
        self.classifier = nn.Linear(self.embedding_dim, self.num_classes)
        # running means of J_m (official J_avg) and J_gen: the previous epoch's mean, 1e6 during the first
        for name in ("j_mean", "j_gen_mean"):
            self.register_buffer(name, torch.tensor(INITIAL_MEAN))
            self.register_buffer(name + "_sum", torch.tensor(0.0))
            self.register_buffer(name + "_count", torch.tensor(0.0))
        self.register_buffer("completed_epochs", torch.tensor(0, dtype=torch.long))
        self.seed = int(seed)
        self.rw_generator = torch.Generator()
        self.rw_generator.manual_seed(self.seed)

    # state --------------------------------------------------------------------------------------
    def get_extra_state(self) -> Tensor:
        """The random-weighting generator's state (``torch.Generator.get_state()``, a uint8 tensor), saved
        in the ``state_dict`` as ``_extra_state``."""
        return self.rw_generator.get_state()

    def set_extra_state(self, state: Tensor) -> None:
        self.rw_generator.set_state(state.cpu())

    def _accumulate(self, name: str, value: Tensor) -> None:
        if self.training:  # official: J.update(max(j.item(), 1e-6)); no host sync here
            getattr(self, name + "_sum").add_(value.detach().clamp_min(1e-6).to(torch.float32))
            getattr(self, name + "_count").add_(1.0)

    def end_epoch(self) -> None:
        """Roll the running means: ``j_mean`` / ``j_gen_mean`` become this epoch's means (kept when the
        epoch had no step), the sums restart (official ``AverageMeter.reset()`` after each epoch)."""
        for name in ("j_mean", "j_gen_mean"):
            count, total = getattr(self, name + "_count"), getattr(self, name + "_sum")
            getattr(self, name).copy_(torch.where(count > 0, total / count.clamp_min(1.0), getattr(self, name)))
            total.zero_()
            count.zero_()
        self.completed_epochs.add_(1)

    @property
    def hardness_scale(self) -> Tensor:
        r""":math:`e^{-\alpha/\bar J_m}`, the factor on ``lambda`` this epoch (0-d tensor)."""
        return self.generator.hardness_scale(self.j_mean)

    @property
    def synthetic_weight(self) -> Tensor:
        r""":math:`1 - e^{-\beta/\bar J_{gen}}`, the weight of :math:`J_{syn}` this epoch (0-d tensor)."""
        return 1.0 - torch.exp(-self.synthetic_beta / self.j_gen_mean)

    # the three steps ----------------------------------------------------------------------------
    def _synthetic_loss(self, negatives: GeneratedNegatives) -> Tensor:
        """:math:`J_{syn}` (unweighted): the metric loss on the batch the generator ran on
        (``negatives.graph``, the global batch when it gathers across processes) with its synthetic
        negatives, through the loss's route (graphneg keywords or pytorch-metric-learning tuple). Private:
        only :meth:`metric_loss` calls it, on negatives generated with ``lambda`` detached, so no public
        call path lets the metric loss reach the generator."""
        z, y = negatives.graph.x, negatives.graph.y
        if self.synthetic_route == "graphneg":
            if negatives.mask is not None and not self._loss_takes_mask:
                negatives = negatives.compact()  # a loss without neg_mask: drop the padding (one host sync)
            kwargs = {} if negatives.mask is None else {"neg_mask": negatives.mask}
            return self.loss(z, y, neg_embeddings=negatives.x, neg_labels=negatives.labels,
                             anchor_index=negatives.anchor_index, **kwargs)
        t = pml_inputs(negatives)
        return self.loss(z, y, t.indices_tuple, t.ref_emb, t.ref_labels)

    def metric_loss(self, embeddings: Tensor, labels: Tensor) -> GCAHNGMetricLoss:
        """Step 1 (official ``jmetric``): backpropagate ``.total`` into the encoder and the generator."""
        j_m = self.loss(embeddings, labels)
        out = self.generator(embeddings, labels, j_mean=self.j_mean, detach_lam=True,
                             generator=self.rw_generator)  # CPU on every device: one seed a call
        weight = self.synthetic_weight
        j_syn_raw = self._synthetic_loss(out)
        j_syn = weight * j_syn_raw
        j_gce = self.node_loss_weight * node_loss(out)
        self._accumulate("j_mean", j_m)
        return GCAHNGMetricLoss(j_m + j_syn + j_gce, j_m, j_syn, j_syn_raw, j_gce, weight, out)

    def classifier_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Step 2 (official ``ce = 10 * ce1(softmax_classifier(z.detach()), label)``): the classifier only."""
        labels = check_labels(labels, embeddings.size(0), values=False).to(embeddings.device)
        return self.classifier_weight * F.cross_entropy(self.classifier(embeddings.detach()), labels)

    def generator_loss(self, embeddings: Tensor, labels: Tensor) -> GCAHNGLoss:
        """Step 3 (official ``jgen``): :func:`generator_loss` on negatives generated from
        ``embeddings.detach()`` with live ``lambda``; backpropagate ``.total`` into the generator."""
        gen = self.generator
        out = gen(embeddings.detach(), labels, j_mean=self.j_mean, detach_lam=False,
                  generator=self.rw_generator)  # CPU on every device: one seed a call
        terms = generator_loss(out, self.classifier, gen.softmax_factor, gen.dot_weight, gen.div_weight)
        terms.negatives = out
        self._accumulate("j_gen_mean", terms.total)
        return terms

    def clip_gradients(self, *modules: nn.Module) -> None:
        """Clip the gradients of ``modules`` by value at :attr:`grad_clip` (official
        ``torch.nn.utils.clip_grad_value_``; nothing when ``grad_clip`` is ``None``)."""
        if self.grad_clip:
            for m in modules:
                torch.nn.utils.clip_grad_value_(m.parameters(), self.grad_clip)

    # diagnostics --------------------------------------------------------------------------------
    @torch.no_grad()
    def diagnostics(self, step: GCAHNGMetricLoss) -> Dict[str, Tensor]:
        """Scalars of a metric step, no host sync: :func:`generator_diagnostics` (with ``lambda_scale``
        = :attr:`hardness_scale`), ``loss_real`` (:math:`J_m`), ``loss_synthetic`` (:math:`J_{syn}`)."""
        res = generator_diagnostics(step.negatives, getattr(self.generator, "fixed_lambda", None),
                                    self.hardness_scale)
        res["loss_real"], res["loss_synthetic"] = step.real.detach(), step.synthetic_raw.detach()
        return res

    @torch.no_grad()
    def histograms(self, negatives: GeneratedNegatives) -> Dict[str, Tensor]:
        """Per-pair values for histograms: ``lambda`` of the pairs (flattened), the anchor-negative
        distances of the real pairs and of the synthetic negatives (of the compact layout: one host sync
        in the padded one; called once per epoch)."""
        negatives = negatives.compact()
        pairs, emb, x = negatives.pairs, negatives.graph.x.detach(), negatives.x.detach()
        lam = negatives.gnn.lam.detach().index_select(0, pairs.edge)
        real = (emb.index_select(0, pairs.anchor) - emb.index_select(0, pairs.negative)).norm(dim=1)
        synth = (emb.index_select(0, negatives.anchor_index) - x).norm(dim=1)
        return {"lambda": lam.flatten(), "anchor_negative_distance_real": real,
                "anchor_negative_distance_synthetic": synth}

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
                f"synthetic_beta={self.synthetic_beta}, classifier_weight={self.classifier_weight}, "
                f"node_loss_weight={self.node_loss_weight}, grad_clip={self.grad_clip}, "
                f"route={self.synthetic_route!r}")
