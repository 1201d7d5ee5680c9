r"""Contrastive losses on two views: InfoNCE (NT-Xent), DCL, HCL and UnReMix (reconstructed), one code path.

UnReMix's formulas are reconstructions (only the abstract and an overview figure are public); see
:class:`UnReMixLoss` and :mod:`graphneg.sampling`.

Setting. Two views ``z1, z2`` ``[B, D]`` of the same ``B`` samples are L2-normalised and stacked into
``N = 2B`` anchors ``z = [z1; z2]``. Anchor ``i``'s positive is its other view (column
``pos(i) = (i + B) mod 2B``) and its negatives are the other ``2B - 2`` embeddings; with ``labels``
the ones of the same class are excluded (so the number of negatives ``N_i`` varies per anchor), and
optional extra negatives ``neg`` ``[M, D]`` (e.g. gathered from other processes) are appended to every
anchor's candidate set (excluded by ``neg_labels`` when labels are given). With ``s_ij`` the cosine
similarity and ``t`` the temperature:

* :func:`contrastive_pairs` builds the ``[2B, 2B + M]`` cosine matrix, the positive index and the
  boolean negative mask (mask-based, so a variable number of negatives per anchor works);
  :func:`masked_pairs` does the same for PyGCL's keyword call ``loss(anchor=, sample=, pos_mask=,
  neg_mask=)`` (both in :mod:`graphneg.losses.contrastive_pairs`);
* :func:`hcl_estimator` is the single estimator all four losses configure: per anchor,

  .. math::
      \mathrm{pos}_i = e^{s_{i,pos(i)}/t},\quad
      \mathrm{neg}_{ij} = e^{s_{ij}/t},\quad
      R_i = N_i\,\frac{\sum_j w_{ij}\,\mathrm{neg}_{ij}}{\sum_j w_{ij}},\quad
      N^g_i = \max\Big(\frac{R_i - \tau^+ N_i\,\mathrm{pos}_i}{1 - \tau^+},\; N_i e^{-1/t}\Big),\quad
      \ell_i = -\log\frac{\mathrm{pos}_i}{\mathrm{pos}_i + N^g_i}

  with an importance matrix ``w`` over the negatives. Sums run over ``neg(i)``.

================================  =============================  ============  =====
loss                              importance ``w_ij``            ``tau_plus``  clamp
================================  =============================  ============  =====
:class:`InfoNCELoss`              1                              0             no
:class:`DebiasedContrastiveLoss`  1                              ``tau_plus``  yes
:class:`HCLLoss`                  ``exp(beta * s_ij / t)``       ``tau_plus``  yes
:class:`UnReMixLoss`              mixed UnReMix scores (mean 1)  ``tau_plus``  yes
================================  =============================  ============  =====

Numerics: every exponential is taken relative to a per-anchor shift (the largest candidate logit,
detached); the loss is invariant to it, so nothing overflows for small temperatures. InfoNCE uses
``cross_entropy`` (log-sum-exp) directly. The loss is the mean of :math:`\ell_i` over the ``2B`` anchors.
Under autocast the losses run in float32 (:func:`graphneg.precision.full_precision`).

Multi-GPU: with ``gather_distributed=True`` (every loss) and a ``torch.distributed`` process group
(Lightning DDP), the candidates are all processes' views and extras (:func:`contrastive_pairs`; the
decision and the layout come from :func:`graphneg.distributed.gather_layout`), the anchors stay
local; see :meth:`_TwoViewContrastiveLoss.forward` for the reduction.

Host synchronisation: none in a forward on CUDA with value checks off
(:func:`graphneg.validation.value_checks`; the LightningModules turn them off after validating the
batch once), except the one exchange of row counts when gathering across processes.
"""
from __future__ import annotations

import warnings
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from graphneg.distributed import is_distributed
from graphneg.losses.contrastive_pairs import (
    ContrastivePairs,
    contrastive_pairs,
    masked_pairs,
    negative_pair_mask,
)
from graphneg.losses.estimator import EstimatorTerms, hcl_estimator, hcl_importance
from graphneg.precision import full_precision
from graphneg.sampling import (
    REPRESENTATIVENESS,
    UNCERTAINTY,
    mix_scores,
    normalize_scores,
    unremix_components,
)
from graphneg.validation import (
    check_choice, check_hcl_beta, check_hyperparameter, check_neighbours, check_tau_plus, check_temperature,
)


class _TwoViewContrastiveLoss(torch.nn.Module):
    """Base of the contrastive losses; two call forms (see :meth:`forward`)."""

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = False):
        super().__init__()
        if not isinstance(gather_distributed, bool):
            raise TypeError(f"gather_distributed must be True or False, got {gather_distributed!r}")
        self.temperature = check_temperature(temperature)
        self.gather_distributed = gather_distributed

    def reset_parameters(self) -> None:
        """No learnable parameters (kept for a uniform interface)."""

    def _per_anchor(self, pairs: ContrastivePairs) -> Tensor:
        raise TypeError(f"{type(self).__name__} is abstract")

    @full_precision
    def forward(
        self,
        z1: Optional[Tensor] = None,
        z2: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        neg: Optional[Tensor] = None,
        neg_labels: Optional[Tensor] = None,
        *,
        anchor: Optional[Tensor] = None,
        sample: Optional[Tensor] = None,
        pos_mask: Optional[Tensor] = None,
        neg_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """Mean loss over the anchors, in the two-view form or PyGCL's keyword form.

        **Two views** ``loss(z1, z2, labels=None, neg=None, neg_labels=None)``:

        Args:
            z1, z2: two views ``[B, D]`` (any scale; L2-normalised inside); ``2B`` anchors.
            labels: optional class ids ``[B]`` (supervised: same-class samples are not negatives).
            neg: optional extra negatives ``[M, D]`` for every anchor.
            neg_labels: class ids ``[M]`` of ``neg`` (needed with ``labels``).

        **PyGCL keyword form** ``loss(anchor=, sample=, pos_mask=, neg_mask=)``, as PyGCL's
        ``DualBranchContrast`` / ``SingleBranchContrast`` call a loss: ``anchor`` ``[M, D]``,
        ``sample`` ``[N, D]``, masks ``[M, N]`` with one positive per row
        (:func:`~graphneg.losses.contrastive_pairs.masked_pairs`); the result is the mean over the
        ``M`` anchors. In ``DualBranchContrast(loss, mode='G2G', intraview_negs=True)`` the average of
        its two calls equals the two-view call ``loss(g1, g2)``.

        With ``gather_distributed=True`` inside a process group (Lightning DDP) the two-view
        candidates span all processes' batches (:func:`contrastive_pairs`) and the result is the mean
        over *this process's* ``2B_r`` anchors. Reduction: the single-process loss on the concatenated
        batch is the batch-size-weighted mean ``sum_r B_r L_r / sum_r B_r`` of the processes' losses,
        i.e. their plain mean (what DDP's gradient averaging minimises) when every ``B_r`` is equal;
        then the averaged gradients equal the single-process ones too (``tests/test_distributed.py``).
        With unequal ``B_r``, scale the loss by ``W B_r / sum_r B_r`` before ``backward`` for exact
        gradients. The keyword form does not gather. Under autocast (``bf16-mixed``, ``16-mixed``)
        the loss runs in float32 (:func:`graphneg.precision.full_precision`).
        """
        keyword = (anchor, sample, pos_mask, neg_mask)
        if any(v is not None for v in keyword):
            if any(v is not None for v in (z1, z2, labels, neg, neg_labels)):
                raise TypeError(
                    f"{type(self).__name__}: pass either two views (z1, z2, labels, neg, neg_labels) or "
                    "PyGCL's keywords (anchor=, sample=, pos_mask=, neg_mask=), not both"
                )
            missing = [n for n, v in zip(("anchor", "sample", "pos_mask", "neg_mask"), keyword) if v is None]
            if missing:
                raise TypeError(f"{type(self).__name__}: the PyGCL keyword form needs {', '.join(missing)} too")
            if self.gather_distributed and is_distributed():
                raise ValueError(
                    f"{type(self).__name__}(gather_distributed=True): the PyGCL keyword form does not "
                    "gather across processes; use the two-view form loss(z1, z2) or gather_distributed=False"
                )
            pairs = masked_pairs(anchor, sample, pos_mask, neg_mask)
        else:
            if z1 is None or z2 is None:
                raise TypeError(
                    f"{type(self).__name__} needs two views loss(z1, z2) or PyGCL's keywords "
                    "loss(anchor=, sample=, pos_mask=, neg_mask=)"
                )
            pairs = contrastive_pairs(z1, z2, labels, neg, neg_labels, self.gather_distributed)
        return self._per_anchor(pairs).mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}" + self._gather_repr()

    def _gather_repr(self) -> str:
        return ", gather_distributed=True" if self.gather_distributed else ""


class InfoNCELoss(_TwoViewContrastiveLoss):
    r"""NT-Xent / InfoNCE as in SimCLR (Chen et al., ICML 2020, eq. 1; Oord et al. 2018).

    :math:`\ell_i = -\log \frac{e^{s_{i,pos(i)}/t}}{e^{s_{i,pos(i)}/t} + \sum_{j \in neg(i)} e^{s_{ij}/t}}`,
    i.e. :func:`hcl_estimator` with uniform importance, ``tau_plus=0`` and no clamp (evaluated as
    ``logsumexp``); equal to ``cross_entropy`` over the masked logits.

    Args:
        temperature: ``t > 0``, finite.
        gather_distributed: candidates from all processes under DDP (see :meth:`forward`).
    """

    def _per_anchor(self, pairs: ContrastivePairs) -> Tensor:
        logits = pairs.sim / self.temperature
        return hcl_estimator(
            logits, pairs.pos_index, pairs.neg_mask, self.temperature, 0.0, None, clamp=False,
        )


class DebiasedContrastiveLoss(_TwoViewContrastiveLoss):
    r"""Debiased contrastive loss (Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020).

    Not lightly's ``DCLLoss`` (*Decoupled* contrastive learning, Yeh et al., ECCV 2022); the old
    name here, :class:`DCLLoss`, is a deprecated alias of this class.

    :func:`hcl_estimator` with uniform importance:
    :math:`N^g_i = \max\big((\sum_j e^{s_{ij}/t} - \tau^+ N_i e^{s_{i,pos(i)}/t}) / (1 - \tau^+),\,
    N_i e^{-1/t}\big)`. With ``tau_plus=0`` it equals :class:`InfoNCELoss` (the clamp is then inactive
    because every :math:`e^{s/t} \ge e^{-1/t}`).

    Args:
        temperature: ``t > 0``, finite.
        tau_plus: class prior of false negatives in ``[0, 1)``.
        gather_distributed: candidates from all processes under DDP (see :meth:`forward`).
    """

    def __init__(self, temperature: float = 0.5, tau_plus: float = 0.1, gather_distributed: bool = False):
        super().__init__(temperature, gather_distributed)
        self.tau_plus = check_tau_plus(tau_plus)

    def _per_anchor(self, pairs: ContrastivePairs) -> Tensor:
        logits = pairs.sim / self.temperature
        return hcl_estimator(
            logits, pairs.pos_index, pairs.neg_mask, self.temperature, self.tau_plus, None,
            clamp=True, num_neg=pairs.num_neg,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, tau_plus={self.tau_plus}" + self._gather_repr()


class DCLLoss(DebiasedContrastiveLoss):
    """Deprecated alias of :class:`DebiasedContrastiveLoss` (kept for one release; warns on use).

    Takes exactly the arguments of its target (``temperature``, ``tau_plus``,
    ``gather_distributed``). Renamed because ``DCLLoss`` names *Decoupled* contrastive learning in
    lightly.
    """

    def __init__(self, temperature: float = 0.5, tau_plus: float = 0.1, gather_distributed: bool = False):
        warnings.warn(
            "graphneg.losses.DCLLoss is deprecated and will be removed in the next release: use "
            "graphneg.losses.DebiasedContrastiveLoss (the same loss and arguments; lightly's DCLLoss is "
            "the different Decoupled contrastive loss)",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(temperature, tau_plus, gather_distributed)


class HCLLoss(_TwoViewContrastiveLoss):
    r"""Hard contrastive loss (Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR 2021).

    :func:`hcl_estimator` with importance :math:`w_{ij} = e^{\beta s_{ij}/t}` (computed relative to
    the anchor's hardest negative, a constant the estimator is invariant to). As in the reference code
    joshr17/HCL ``image/main.py``, the importance is not detached: gradients flow through it. With
    ``beta=0`` it equals :class:`DebiasedContrastiveLoss`.

    Args:
        temperature: ``t > 0``, finite.
        tau_plus: class prior of false negatives in ``[0, 1)``.
        beta: concentration ``>= 0``, finite.
        gather_distributed: candidates from all processes under DDP (see :meth:`forward`).
    """

    def __init__(self, temperature: float = 0.5, tau_plus: float = 0.1, beta: float = 1.0,
                 gather_distributed: bool = False):
        super().__init__(temperature, gather_distributed)
        self.tau_plus = check_tau_plus(tau_plus)
        self.beta = check_hcl_beta(beta)

    def _per_anchor(self, pairs: ContrastivePairs) -> Tensor:
        logits = pairs.sim / self.temperature
        beta = self.beta
        imp = None if beta == 0 else (lambda terms: hcl_importance(terms, beta))
        return hcl_estimator(
            logits, pairs.pos_index, pairs.neg_mask, self.temperature, self.tau_plus, imp,
            clamp=True, num_neg=pairs.num_neg,
        )

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, tau_plus={self.tau_plus}, beta={self.beta}"
                + self._gather_repr())


#: Names of the UnReMix mixing weights, in the order of a positional ``weights`` tuple.
WEIGHT_NAMES = ("similarity", "uncertainty", "representativeness")


def _check_weights(weights) -> Tuple[float, float, float]:
    """``(similarity, uncertainty, representativeness)`` from a 3-sequence (that order) or a mapping."""
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(WEIGHT_NAMES))
        if unknown:
            raise ValueError(
                f"weights has unknown names {unknown}: use similarity (lambda2), uncertainty (lambda1) "
                "and representativeness (lambda3); a missing name counts as 0"
            )
        weights = tuple(weights.get(name, 0.0) for name in WEIGHT_NAMES)
    elif isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ValueError(
            "weights must be three numbers (similarity, uncertainty, representativeness) or a mapping "
            f"such as dict(uncertainty=1, similarity=1, representativeness=1), got {weights!r}"
        )
    weights = tuple(weights)
    if len(weights) != 3:
        raise ValueError(
            "weights must hold three coefficients (similarity, uncertainty, representativeness), "
            f"got {weights!r}"
        )
    try:
        out = tuple(check_hyperparameter(w, f"weights[{name!r}]", 0.0) for name, w in zip(WEIGHT_NAMES, weights))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"weights must be finite and non-negative with a positive sum, got {weights!r}: {err}"
        ) from None
    if sum(out) <= 0:
        raise ValueError(
            f"weights must be finite, non-negative and have a positive sum, got {weights!r}; "
            "e.g. (1, 0, 0) for the similarity signal alone"
        )
    return out  # type: ignore[return-value]


class UnReMixLoss(_TwoViewContrastiveLoss):
    r"""UnReMix (Tabassum et al., arXiv 2206.01197), reconstructed, as importance weights in the HCL estimator.

    Reconstruction caveat: only the paper's abstract and its overview figure are public (no
    formulas, no code); the three scores of :mod:`graphneg.sampling` and their mixture are
    graphneg's reconstructions (each docstring there says what is sourced and what is chosen). The
    figure (authors' lab site repository PLAN-Lab/plan-lab.github.io,
    ``assets/images/publications/unremix.png``) gives the highest representativeness to the negative
    least like the others: hence ``representativeness="diversity"`` by default, in its neighbourhood
    form (mean cosine distance to the ``k`` nearest candidates on the batch kNN graph,
    :func:`~graphneg.sampling.diversity_scores`). graphneg's own study
    (``experiments/results/unremix_study.md``, full mix, 5 seeds, diversity over all candidates)
    measured diversity level with or above density on its three datasets: +0.2, +0.4, +0.5 points.

    For every (anchor ``i``, negative ``j``) the three raw scores are computed by
    :func:`~graphneg.sampling.unremix_components`, each normalised per anchor to mean 1 over its
    negatives (:func:`~graphneg.sampling.normalize_scores`), and mixed
    (:func:`~graphneg.sampling.mix_scores`) with the paper's numbering of the weights

    .. math:: w_{ij} = \frac{\lambda_1 \hat w^{unc}_{ij} + \lambda_2 \hat w^{sim}_{ij}
                        + \lambda_3 \hat w^{rep}_{ij}}{\lambda_1 + \lambda_2 + \lambda_3}

    (:math:`\lambda_1` model uncertainty, :math:`\lambda_2` anchor similarity, :math:`\lambda_3`
    representativeness; the mix keeps mean 1), then used as the importance of :func:`hcl_estimator`.
    ``weights`` is a mapping ``dict(uncertainty=lambda_1, similarity=lambda_2,
    representativeness=lambda_3)`` (a missing name is 0) or, as before, a positional tuple in the
    order ``(similarity, uncertainty, representativeness) = (lambda_2, lambda_1, lambda_3)``.
    Similarity alone (``dict(similarity=1)``) reproduces :class:`HCLLoss` (same ``t``, ``tau_plus``,
    ``beta``); components with weight 0 are not computed.

    Args:
        temperature: ``t > 0``, finite.
        tau_plus: class prior in ``[0, 1)``.
        beta: HCL concentration of the similarity score, ``>= 0``, finite.
        weights: mixing coefficients, finite and non-negative with a positive sum (see above).
        k: neighbours per node of the batch kNN graph of the representativeness, an integer ``>= 1``
            (``None``: all other candidates).
        detach_scores: compute the scores from detached embeddings (default ``True``): they are
            importance weights, not a path for gradients; ``False`` back-propagates through them too.
        representativeness: ``"diversity"`` (default; up-weights negatives far from their nearest
            other candidates, :func:`~graphneg.sampling.diversity_scores`) or ``"density"``
            (up-weights negatives in dense regions, :func:`~graphneg.sampling.density_scores`).
        uncertainty: ``"gradient"`` (norm of the InfoNCE gradient w.r.t. the negative) or
            ``"pseudo_label"`` (gradient of the auxiliary "same anchor?" task and its disagreement
            with the anchor's gradient), see :func:`~graphneg.sampling.uncertainty_scores`.
        gather_distributed: candidates from all processes under DDP (see :meth:`forward`); the
            representativeness kNN graph is then built over the global candidates, so every process
            scores the same global neighbourhoods.

    Attributes:
        last_scores: the last batch's detached ``[N, C]`` per-anchor mean-1 scores for logging:
            ``'similarity'``, ``'uncertainty'``, ``'representativeness'`` (only the components with a
            positive weight) and ``'weights'`` (the mix the loss used), zero outside the negatives.
            References to the forward's own tensors, released at the next forward.
        last_neg_mask: the last batch's ``[N, C]`` negative mask (the layout of ``last_scores``,
            local or gathered); :meth:`negative_pair_scores` applies it.
    """

    def __init__(
        self,
        temperature: float = 0.5,
        tau_plus: float = 0.1,
        beta: float = 1.0,
        weights: Union[Sequence[float], Mapping[str, float]] = (1.0, 1.0, 1.0),
        k: Optional[int] = 10,
        detach_scores: bool = True,
        representativeness: str = "diversity",
        uncertainty: str = "gradient",
        gather_distributed: bool = False,
    ):
        super().__init__(temperature, gather_distributed)
        self.tau_plus = check_tau_plus(tau_plus)
        self.beta = check_hcl_beta(beta)
        self.k = check_neighbours(k)
        self.weights: Tuple[float, float, float] = _check_weights(weights)
        if not isinstance(detach_scores, bool):
            raise TypeError(f"detach_scores must be True or False, got {detach_scores!r}")
        self.detach_scores = detach_scores
        self.representativeness = check_choice("representativeness", representativeness, REPRESENTATIVENESS)
        self.uncertainty = check_choice("uncertainty", uncertainty, UNCERTAINTY)
        self._last_scores: Dict[str, Tensor] = {}
        self._last_neg_mask: Optional[Tensor] = None

    @property
    def named_weights(self) -> Dict[str, float]:
        """The mixing weights by name: ``uncertainty`` (lambda1), ``similarity`` (lambda2),
        ``representativeness`` (lambda3)."""
        return dict(zip(WEIGHT_NAMES, self.weights))

    @property
    def last_scores(self) -> Dict[str, Tensor]:
        """The last batch's detached, per-anchor mean-1 scores ``[N, C]`` and their mix ``'weights'``."""
        return self._last_scores

    @property
    def last_neg_mask(self) -> Optional[Tensor]:
        """The last batch's ``[N, C]`` negative mask (``None`` before the first forward)."""
        return self._last_neg_mask

    def negative_pair_scores(self) -> Dict[str, Tensor]:
        """The last batch's scores over its negative pairs only: ``name -> [P]`` (row-major order).

        What the score histograms log: entries outside the negative mask (an anchor itself, its
        positive, same-class candidates) are zeros by construction and are left out, locally and
        with gathered candidates alike. Boolean-mask indexing (a host read of ``P``): call it for
        logging, not inside a training step.
        """
        mask = self._last_neg_mask
        if mask is None:
            return {}
        return {name: t[mask] for name, t in self._last_scores.items()}

    def importance(self, pairs: ContrastivePairs) -> Tensor:
        """The mixed mean-1 UnReMix importance ``[N, C]`` of a batch (zero outside the negatives)."""
        self._last_scores, self._last_neg_mask = {}, None  # release the previous batch's scores
        detach = self.detach_scores
        anchors = pairs.anchors.detach() if detach else pairs.anchors
        cand = pairs.candidates.detach() if detach else pairs.candidates
        sim = pairs.sim.detach() if detach else pairs.sim
        comps = unremix_components(
            anchors, cand, sim, pairs.pos_index, pairs.neg_mask, self.temperature, self.beta, self.k,
            self.representativeness, self.uncertainty, partner=pairs.partner,
            anchors_first=pairs.anchors_first, active=tuple(w > 0 for w in self.weights),
        )
        normed = [None if c is None else normalize_scores(c, pairs.neg_mask) for c in comps]
        w = mix_scores(normed, self.weights)
        last = {name: v.detach() for name, v in zip(comps._fields, normed) if v is not None}
        last["weights"] = w.detach()
        self._last_scores, self._last_neg_mask = last, pairs.neg_mask.detach()
        return w

    def _per_anchor(self, pairs: ContrastivePairs) -> Tensor:
        w = self.importance(pairs)
        logits = pairs.sim / self.temperature
        return hcl_estimator(
            logits, pairs.pos_index, pairs.neg_mask, self.temperature, self.tau_plus,
            w, clamp=True, num_neg=pairs.num_neg,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, tau_plus={self.tau_plus}, beta={self.beta}, "
            f"weights={self.weights}, k={self.k}, detach_scores={self.detach_scores}, "
            f"representativeness={self.representativeness!r}, uncertainty={self.uncertainty!r}"
        ) + self._gather_repr()


__all__ = ["InfoNCELoss", "DebiasedContrastiveLoss", "DCLLoss", "HCLLoss", "UnReMixLoss", "contrastive_pairs",
           "masked_pairs", "hcl_estimator", "hcl_importance", "EstimatorTerms", "negative_pair_mask",
           "ContrastivePairs", "WEIGHT_NAMES"]
