"""GCA-HNG hard-negative generator: correlation graph -> GCAGNN -> channel-adaptive interpolation.

Peng et al., "Globally Correlation-Aware Hard Negative Generation" (IJCV / arXiv 2024); official
code github.com/PWenJay/GCA-HNG (``scripts/models.py`` ``GCA_HNG``, ``GeneralPulling``,
``GNNDecoder``; ``scripts/loss.py`` ``DiverseLoss``). Each mini-batch becomes a PyG graph whose
message-passing layers (:class:`~graphneg.nn.GCAGNN`) predict one channel-wise interpolation
vector per edge; hard negatives are generated HDML-style between an anchor and its negatives.

Fixes with respect to the official code (all tested in ``tests/test_generator.py``):

* the batch layout is not assumed (the official code needs ``m`` chunks of ``C`` samples with the
  same class order): positives, negatives and random weighting work from ``labels`` in any order;
* the ``J_sim_mix`` diagonal mask: the official mask index ``i * B + j`` hits the own-class rows
  only when ``m == 1``, so for ``m > 1`` own-class "negatives" enter ``1 - cos``; here only
  other-class pairs are ever generated, so no own-class row exists to mask;
* no hard-coded CUDA device (tensors follow the input), no deprecated ``torch.range``.

Other deliberate differences, each small:

* the official generator emits ``B * C`` rows including, per anchor, a mix of its *own* class
  (labelled with that class and included in ``jsoft``); only other-class rows are produced here,
  so ``jsoft`` and the ``1 - cos`` mean run over the ``B * (C - 1)`` real negatives' rows;
* a class with a single sample in the batch uses the anchor as its own positive (``d+ = 0``);
  the official layout always has ``m >= 2``;
* ``d-`` is clamped at ``1e-12`` in ``d+/d-`` and the diversity radicand at ``1e-12``, so
  duplicated embeddings give no NaN gradients;
* ``edges="knn"`` is an addition (sparse graph, see :class:`GCAHNG`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import coalesce, scatter

from graphneg.graph import check_embeddings, check_labels, check_multiclass, dense_edge_mask, knn_index
from graphneg.nn.functional import gather_distance, gather_lerp
from graphneg.nn.gca_gnn import GCAGNN

EDGE_MODES = ("complete", "knn")
RW_MODES = ("chain", "dirichlet", None)


@dataclass
class GeneratedNegatives:
    """Output of :meth:`GCAHNG.forward`.

    ``G`` synthetic negatives (rows of ``x``) are built from ``P`` (anchor, real negative) pairs.
    Without random weighting (``rw=None``) ``G == P`` and row ``g`` is pair ``g``; with random
    weighting row ``g`` is the convex mix of the pairs with ``pair_group == g`` (one row per
    anchor and other class present among its negatives).

    Attributes:
        x: synthetic negatives ``[G, D]``.
        labels: their class (the class of the real negatives they come from) ``[G]``.
        anchor_index: the anchor (row of ``embeddings``) of each synthetic negative ``[G]``.
        source_index: the real negative ``n`` (row of ``embeddings``) of each pair ``[P]``.
        lam: (property) ``lambda_an`` of each pair, the GNN output on edge ``a -> n`` (before
            the ``exp(-alpha / J_mean)`` factor; detached when ``detach_lam=True``) ``[P, D]``.
        pair_edge: the edge (column of ``edge_index``) ``a -> n`` of each pair ``[P]``.
        pair_anchor: the anchor of each pair ``[P]``.
        pair_group: the row of ``x`` each pair is mixed into ``[P]``.
        weights: convex mixing weights of the pairs (ones when ``rw=None``) ``[P]``.
        pair_x: the generated negative of each pair before mixing ``[P, D]`` (``None`` with
            random weighting unless ``return_pairs=True``).
        hard: ``d+ < d-`` per pair (``False``: the real negative was returned) ``[P]``.
        positive_index: the positive used for each node ``[B]``.
        node_logits: GNN node-classification logits ``[B, num_classes]``.
        node_labels: the batch labels ``[B]``.
        edge_index: the batch graph ``[2, E]`` (``edge_index[0]`` = source).
        edge_lam: ``lambda`` of every edge ``[E, D]`` (used by the diversity term).
        embeddings: the input embeddings ``[B, D]`` (the same tensor, not a copy).
        lam_detached: whether ``lam`` was detached for generation.
    """

    x: Tensor
    labels: Tensor
    anchor_index: Tensor
    source_index: Tensor
    pair_edge: Tensor
    pair_anchor: Tensor
    pair_group: Tensor
    weights: Tensor
    pair_x: Optional[Tensor]
    hard: Tensor
    positive_index: Tensor
    node_logits: Tensor
    node_labels: Tensor
    edge_index: Tensor
    edge_lam: Tensor
    embeddings: Tensor
    lam_detached: bool = False

    @property
    def lam(self) -> Tensor:
        """``lambda_an`` of each pair ``[P, D]`` (``edge_lam[pair_edge]``; gathered on access)."""
        lam = self.edge_lam.index_select(0, self.pair_edge)
        return lam.detach() if self.lam_detached else lam


@dataclass
class GCAHNGLoss:
    """The generator's own training terms (official ``GCA_HNG.forward``, second half).

    Attributes:
        total: ``0.5 * (softmax_ce + dot_weight * similarity + div_weight * diversity)``.
        softmax_ce: ``softmax_factor * CE(classifier(x), labels)`` (official ``jsoft``).
        similarity: mean of ``1 - cos(z_a, x)`` over the synthetic negatives (``J_sim_mix``).
        diversity: ``1e-2 * DiverseLoss`` (official ``J_div``).
    """

    total: Tensor
    softmax_ce: Tensor
    similarity: Tensor
    diversity: Tensor


def next_same_class(labels: Tensor) -> Tensor:
    """For each sample the next sample of its class in batch order, cyclically ``[B]``.

    Official ``GeneralPulling`` / ``NpairLoss``: the positive of the anchor in chunk ``id`` is the
    same-class sample of chunk ``id + 1`` (chunk 0 for the last chunk), which in the chunked
    layout is exactly the next same-class sample in batch order, cyclic. A class with a single
    sample gets itself (``d+ = 0``). Vectorised with a stable sort.
    """
    n = labels.numel()
    perm = torch.argsort(labels, stable=True)
    sl = labels.index_select(0, perm)
    ar = torch.arange(n, device=labels.device)
    boundary = sl[1:] != sl[:-1]
    first = torch.ones(n, dtype=torch.bool, device=labels.device)
    first[1:] = boundary
    last = torch.ones(n, dtype=torch.bool, device=labels.device)
    last[:-1] = boundary
    start = torch.cummax(torch.where(first, ar, torch.zeros_like(ar)), dim=0).values
    nxt = torch.where(last, start, ar + 1)
    out = torch.empty_like(perm)
    out[perm] = perm.index_select(0, nxt)
    return out


def rank_in_class(labels: Tensor) -> Tensor:
    """Occurrence number of each sample within its class in batch order (0, 1, ...) ``[B]``.

    In the official chunked layout this is the chunk index ``id`` of the sample.
    """
    n = labels.numel()
    perm = torch.argsort(labels, stable=True)
    sl = labels.index_select(0, perm)
    ar = torch.arange(n, device=labels.device)
    first = torch.ones(n, dtype=torch.bool, device=labels.device)
    first[1:] = sl[1:] != sl[:-1]
    start = torch.cummax(torch.where(first, ar, torch.zeros_like(ar)), dim=0).values
    out = torch.empty_like(perm)
    out[perm] = ar - start
    return out


def _rank_within_groups(group: Tensor, key: Tensor, num_groups: int, key_range: int):
    """Rank of each element within its group ordered by ``key``, and the group sizes."""
    perm = torch.argsort(group * key_range + key)
    counts = torch.bincount(group, minlength=num_groups)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(group)
    rank[perm] = torch.arange(group.numel(), device=group.device) - starts.index_select(
        0, group.index_select(0, perm))
    return rank, counts


def _uniform(shape, generator: Optional[torch.Generator], device, dtype) -> Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def chain_weights(
    step: Tensor, size: Tensor, chunk: Tensor, generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Convex weights equivalent to the official chained random mixing.

    Official ``GeneralPulling``: for the anchors of chunk ``id`` and one class, the generated
    negatives :math:`\hat{z}_0, \dots, \hat{z}_{K-1}` (one per chunk, in order) are mixed as
    ``tmp = z_0``; ``tmp = z_t + u_t (tmp - z_t)`` for ``t = 1..K-1``, with one
    ``np.random.random()`` per step shared by all anchors of the chunk and all classes. The
    result is :math:`\sum_t w_t \hat{z}_t` with

    .. math:: w_0 = \prod_{s=1}^{K-1} u_s,\qquad
              w_t = (1 - u_t) \prod_{s=t+1}^{K-1} u_s \quad (t \ge 1),

    which sum to 1. Draws: ``u = torch.rand(R, T, generator=generator)`` with ``R`` = number of
    chunks (max ``chunk`` + 1) and ``T = max(size) - 1``; ``u[r, t - 1]`` is the draw of step
    ``t`` for anchors of chunk ``r`` (the official draw order). Products are taken in log space.

    Args:
        step: position ``t`` of each pair within its (anchor, class) group ``[P]``.
        size: size ``K`` of the pair's group ``[P]``.
        chunk: chunk (rank in class) ``r`` of the pair's anchor ``[P]``.

    Returns:
        weights ``[P]``.
    """
    num_steps = int(size.max()) - 1 if size.numel() else 0
    if num_steps <= 0:
        return torch.ones(step.shape, dtype=dtype, device=step.device)
    num_chunks = int(chunk.max()) + 1
    u = _uniform((num_chunks, num_steps), generator, step.device, dtype)
    log_u = u.clamp_min(torch.finfo(dtype).tiny).log()
    cum = torch.cat([torch.zeros(num_chunks, 1, dtype=dtype, device=step.device),
                     log_u.cumsum(dim=1)], dim=1)  # cum[r, t] = sum_{s<=t} log u_s
    tail = (cum[chunk, size - 1] - cum[chunk, step]).exp()
    head = torch.where(step == 0, torch.ones_like(tail), 1.0 - u[chunk, (step - 1).clamp_min(0)])
    return head * tail


def dirichlet_weights(
    group: Tensor, num_groups: int, generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Flat Dirichlet(1, ..., 1) weights within each group (normalised i.i.d. Exp(1) draws).

    Reconstructed alternative to the chain (not in the official code): the chain's weights are
    not exchangeable (later samples get larger expected weight); Dirichlet(1) is uniform on the
    simplex. ``u = torch.rand(P, generator=generator)``, ``w = -log(1 - u)`` normalised per group.
    """
    u = _uniform(group.shape, generator, group.device, dtype)
    e = -torch.log1p(-u)
    total = scatter(e, group, dim=0, dim_size=num_groups, reduce="sum")
    return e / total.clamp_min(torch.finfo(dtype).tiny).index_select(0, group)


def hdml_interpolate(
    anchor: Tensor, negative: Tensor, d_pos: Tensor, d_neg: Tensor, lam: Tensor,
    scale: Union[float, Tensor] = 1.0, eps: float = 1e-12,
):
    r"""Channel-adaptive HDML interpolation (official ``GeneralPulling.forward``).

    .. math::
        \lambda' = \lambda\,e^{-\alpha/J_m},\quad
        r = \frac{d^+ + (d^- - d^+)\lambda'}{d^-},\quad
        \tilde{z} = \begin{cases} z_a + r \odot (z_n - z_a) & d^+ < d^-\\ z_n & d^+ \ge d^-\end{cases}

    (Peng et al. Eq. (generation); Zheng et al., HDML, CVPR 2019, Eq. 4, made channel-wise.)
    Written as ``r = rho + (1 - rho) * scale * lam`` with ``rho = d+/d-`` (``rho = 1`` where
    ``d+ >= d-``, which gives exactly ``r = 1`` and ``z~ = z_n`` with zero gradient to ``lam``,
    like the official masks) and ``z~ = lerp(z_a, z_n, r)``; since ``r in [d+/d-, 1]``,
    ``z~`` lies channel-wise on the segment from ``z_a`` to ``z_n``.

    Shapes: ``anchor, negative, lam`` :math:`(P, D)`; ``d_pos, d_neg`` :math:`(P,)`;
    returns ``(z~ (P, D), hard (P,))``.
    """
    hard = d_pos < d_neg
    rho = torch.where(hard, d_pos / d_neg.clamp_min(eps), torch.ones_like(d_pos))
    r = torch.addcmul(rho.unsqueeze(1), ((1.0 - rho) * scale).unsqueeze(1), lam)
    return torch.lerp(anchor, negative, r), hard


def diversity_loss(lam: Tensor, edge_index: Tensor, num_nodes: int, eps: float = 1e-12) -> Tensor:
    r"""Lambda diversity term (official ``scripts/loss.py`` ``DiverseLoss``).

    .. math:: 1 - \sqrt{\frac{1}{E}\sum_{e=(r,c)} \lVert\lambda_e - \bar\lambda_r\rVert^2},\qquad
              \bar\lambda_r = \operatorname{mean}_{e=(r,\cdot)} \lambda_e,

    the mean over the out-edges of the source ``r = edge_index[0]`` (official ``scatter_mean``
    over ``r``). The squared deviation is summed over channels and divided by the number of edges
    only, as in the official code. ``eps`` clamps the radicand (the official ``sqrt`` has an
    infinite gradient at 0).
    """
    src = edge_index[0]
    mean = scatter(lam, src, dim=0, dim_size=num_nodes, reduce="mean")
    dev = lam - mean.index_select(0, src)
    return 1.0 - (dev.pow(2).sum() / max(lam.size(0), 1)).clamp_min(eps).sqrt()


class GCAHNG(nn.Module):
    r"""GCA-HNG hard-negative generator (official ``GCA_HNG`` minus backbone and metric loss).

    ``forward(embeddings, labels)`` builds the batch graph, runs :class:`~graphneg.nn.GCAGNN` and
    generates, for every anchor ``a`` and other-class neighbour ``n``, the channel-wise HDML
    interpolation (:func:`hdml_interpolate`) with ``lambda_an`` read on the edge ``a -> n``
    (official edge ``(r, c) = (a, n)``); the positive is :func:`next_same_class`. The generated
    label is the negative's class.

    Graphs (``edges``):

    * ``"complete"`` (official): all ordered pairs including self-loops, ``E = B^2``; the negatives
      of ``a`` are all other-class samples. Memory ``O(B^2 D)`` as in the official code.
    * ``"knn"`` (sparse): each node's ``k`` most Pearson-correlated other-class nodes
      (:func:`graphneg.graph.knn_index` ``negatives_only=True, metric="pearson"``), symmetrised
      (so edge features stay symmetric and every node attends to at least ``k`` negatives), plus
      all same-class pairs with self-loops. ``E <= 2 B k + sum_c m_c^2``, memory ``O(B k D)``.
      The negatives of ``a`` are its neighbours in this graph (its ``k`` nearest other-class
      nodes and the nodes that have ``a`` among theirs).

    Random weighting (``rw``), per anchor and other class, over the pairs of that class:
    ``"chain"`` = the official chained uniform draws (:func:`chain_weights`), ``"dirichlet"`` =
    flat Dirichlet weights (:func:`dirichlet_weights`), ``None`` = every pair is returned.

    Defaults follow the official ``scripts/cfgs/G_CUB200.yml`` (``ALPHA 4``, ``SOFTMAX_FACTOR 20``,
    ``DOT_WEIGHT 10``, ``DIV_WEIGHT 10``, 2 layers, 4 heads); the ResNet configs use
    ``alpha=5, dot_weight=20, div_weight=60``.

    Args:
        dim (int): embedding size ``D``.
        num_classes (int): number of training classes (node classifier).
        num_layers (int): GCA blocks. (default ``2``)
        heads (int): attention heads. (default ``4``)
        edges (str): ``"complete"`` or ``"knn"``.
        k (int, optional): neighbours per node for ``edges="knn"``.
        alpha (float): hardness schedule ``lam' = lam * exp(-alpha / J_mean)``.
        rw (str or None): ``"chain"``, ``"dirichlet"`` or ``None``.
        softmax_factor, dot_weight, div_weight (float): weights of the generator loss.
        dropout (float): node-to-edge attention dropout (official ``0.1``).
        hidden_channels (int, optional): FFN hidden size (default ``4 * dim``).
        fixed_lambda (float, optional): replace the GNN's ``lambda`` by this constant in the
            generation (ablation): with ``1.0`` it is exactly HDML's interpolation (Zheng et al.,
            CVPR 2019, Eq. 4: ``r = (d+ + (d- - d+) exp(-alpha / J_mean)) / d-``). The GNN still runs
            (node loss, diversity); ``GeneratedNegatives.lam`` still reports its (unused) output.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        num_layers: int = 2,
        heads: int = 4,
        edges: str = "complete",
        k: Optional[int] = None,
        alpha: float = 4.0,
        rw: Optional[str] = "chain",
        softmax_factor: float = 20.0,
        dot_weight: float = 10.0,
        div_weight: float = 10.0,
        dropout: float = 0.1,
        hidden_channels: Optional[int] = None,
        fixed_lambda: Optional[float] = None,
    ):
        super().__init__()
        if edges not in EDGE_MODES:
            raise ValueError(f"edges must be one of {EDGE_MODES}, got {edges!r}")
        if edges == "knn" and (k is None or int(k) < 1):
            raise ValueError(f"edges='knn' needs a positive integer k (neighbours per node), got {k!r}")
        if edges == "complete" and k is not None:
            raise ValueError("k is only used with edges='knn'; drop k or set edges='knn'")
        if rw not in RW_MODES:
            raise ValueError(f"rw must be one of {RW_MODES}, got {rw!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if fixed_lambda is not None and not 0.0 <= float(fixed_lambda) <= 1.0:
            raise ValueError(f"fixed_lambda must lie in [0, 1] (an interpolation factor), got {fixed_lambda}")
        self.fixed_lambda = None if fixed_lambda is None else float(fixed_lambda)
        self.dim = dim
        self.num_classes = num_classes
        self.edges = edges
        self.k = None if k is None else int(k)
        self.alpha = float(alpha)
        self.rw = rw
        self.softmax_factor = float(softmax_factor)
        self.dot_weight = float(dot_weight)
        self.div_weight = float(div_weight)
        self.gnn = GCAGNN(dim, num_classes, num_layers, heads, hidden_channels, dropout)

    def reset_parameters(self) -> None:
        self.gnn.reset_parameters()

    # graph ------------------------------------------------------------------------------------
    def build_graph(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The batch graph ``edge_index`` ``[2, E]`` (sorted by source, then target)."""
        n, device = embeddings.size(0), embeddings.device
        if self.edges == "complete":
            ar = torch.arange(n, device=device)
            return torch.stack([ar.repeat_interleave(n), ar.repeat(n)])
        knn = knn_index(embeddings, self.k, labels=labels, negatives_only=True, metric="pearson")
        tgt, src = dense_edge_mask(n, labels, "positive", loop=True, device=device).nonzero(as_tuple=True)
        edge_index = torch.cat([knn, knn.flip(0), torch.stack([src, tgt])], dim=1)
        return coalesce(edge_index, num_nodes=n)

    def _scale(self, j_mean, ref: Tensor) -> Union[float, Tensor]:
        if j_mean is None:
            return 1.0
        if isinstance(j_mean, Tensor):
            return torch.exp(-self.alpha / j_mean.to(device=ref.device, dtype=ref.dtype))
        j_mean = float(j_mean)
        if not j_mean > 0:
            raise ValueError(f"j_mean (running mean of the metric loss) must be positive, got {j_mean}")
        return math.exp(-self.alpha / j_mean)

    # forward ----------------------------------------------------------------------------------
    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        j_mean: Optional[Union[float, Tensor]] = None,
        detach_lam: bool = False,
        generator: Optional[torch.Generator] = None,
        return_pairs: bool = False,
    ) -> GeneratedNegatives:
        """Generate hard negatives for a labelled batch.

        Args:
            embeddings: ``[B, D]`` raw (unnormalised) embeddings. Pass ``embeddings.detach()``
                for the GNN-only step (official), the live tensor for the metric step.
            labels: ``[B]`` class ids in ``[0, num_classes)``, any order, >= 2 classes.
            j_mean: running mean of the real-pair metric loss (official ``J_avg.avg``, 1e6 in
                the first epoch); ``None`` means ``exp(-alpha / J_mean) = 1``.
            detach_lam: generate with ``lambda.detach()`` (official metric step), so the
                synthetic negatives carry gradients to the embeddings only.
            generator: ``torch.Generator`` for the random weighting draws.
            return_pairs: keep the per-pair negatives ``pair_x`` before mixing (always kept when
                ``rw=None``, where they are ``x``); off by default to save ``P x D`` memory.
        """
        check_embeddings(embeddings)
        b, d = embeddings.shape
        if d != self.dim:
            raise ValueError(f"embeddings have {d} channels but the generator was built with dim={self.dim}")
        labels = check_labels(labels, b).to(embeddings.device)
        check_multiclass(labels)
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ValueError(
                f"labels must lie in [0, num_classes={self.num_classes}); remap the class ids "
                "or build the generator with the number of training classes"
            )
        scale = self._scale(j_mean, embeddings)

        edge_index = self.build_graph(embeddings, labels)
        out = self.gnn(embeddings, edge_index, labels=labels)
        src, tgt = edge_index
        pair_edge = (labels.index_select(0, src) != labels.index_select(0, tgt)).nonzero().view(-1)
        a, n = src.index_select(0, pair_edge), tgt.index_select(0, pair_edge)

        pos = next_same_class(labels)
        d_pos = F.pairwise_distance(embeddings, embeddings.index_select(0, pos))  # official eps 1e-6
        d_neg = gather_distance(embeddings, a, n)  # == F.pairwise_distance(z[a], z[n])
        d_pos = d_pos.index_select(0, a)
        hard = d_pos < d_neg
        rho = torch.where(hard, d_pos / d_neg.clamp_min(1e-12), torch.ones_like(d_pos))
        # == hdml_interpolate(z[a], z[n], d+, d-, lam[pair_edge], scale), fused (no [P, D] gathers
        # of z or lambda are kept for backward)
        if self.fixed_lambda is None:
            lam, lam_index = (out.lam.detach() if detach_lam else out.lam), pair_edge
        else:  # ablation: one constant lambda for every pair and channel (HDML with 1.0)
            lam, lam_index = embeddings.new_full((1, d), self.fixed_lambda), torch.zeros_like(pair_edge)
        pair_x = gather_lerp(embeddings, a, n, rho, lam, lam_index, scale)

        num_pairs = pair_edge.numel()
        if self.rw is None:
            x, out_anchor, out_labels = pair_x, a, labels.index_select(0, n)
            pair_group = torch.arange(num_pairs, device=embeddings.device)
            weights = torch.ones(num_pairs, dtype=embeddings.dtype, device=embeddings.device)
        else:
            classes, cls = torch.unique(labels, return_inverse=True)
            num_cls = classes.numel()
            uniq, pair_group = torch.unique(a * num_cls + cls.index_select(0, n), return_inverse=True)
            num_groups = uniq.numel()
            out_anchor, out_labels = uniq // num_cls, classes.index_select(0, uniq % num_cls)
            if self.rw == "chain":
                step, size = _rank_within_groups(pair_group, n, num_groups, b)
                weights = chain_weights(step, size.index_select(0, pair_group),
                                        rank_in_class(labels).index_select(0, a), generator,
                                        embeddings.dtype)
            else:
                weights = dirichlet_weights(pair_group, num_groups, generator, embeddings.dtype)
            x = scatter(pair_x * weights.unsqueeze(1), pair_group, dim=0, dim_size=num_groups,
                        reduce="sum")
        return GeneratedNegatives(
            x=x, labels=out_labels, anchor_index=out_anchor, source_index=n, pair_edge=pair_edge,
            pair_anchor=a, pair_group=pair_group, weights=weights,
            pair_x=pair_x if (return_pairs or self.rw is None) else None, hard=hard,
            positive_index=pos, node_logits=out.logits, node_labels=labels,
            edge_index=edge_index, edge_lam=out.lam, embeddings=embeddings, lam_detached=detach_lam,
        )

    # losses -----------------------------------------------------------------------------------
    def loss(self, out: GeneratedNegatives, classifier: Callable[[Tensor], Tensor]) -> GCAHNGLoss:
        r"""The GNN-only step's loss (official ``GCA_HNG.forward``, after the classifier step).

        .. math:: J_{gen} = \tfrac12\big(s\,\mathrm{CE}(f(\tilde z), y_n)
                  + w_{dot}\,\overline{(1 - \cos(z_a, \tilde z))} + w_{div}\,10^{-2} J_{div}\big)

        ``classifier`` is the external softmax classifier (official ``softmax_classifier``,
        ``Linear(D, num_classes)``) and ``y_n`` the negative's class (label preserving).
        The ``1 - cos`` mean runs over the synthetic negatives, all of another class than their
        anchor (the official mean runs over ``B * C`` rows incl. own-class rows it tries to zero).
        Nothing is detached here: call :meth:`forward` on detached embeddings for this step.
        """
        softmax_ce = self.softmax_factor * F.cross_entropy(classifier(out.x), out.labels)
        anchors = out.embeddings.index_select(0, out.anchor_index)
        similarity = (1.0 - F.cosine_similarity(anchors, out.x, dim=1)).mean()
        diversity = 1e-2 * diversity_loss(out.edge_lam, out.edge_index, out.embeddings.size(0))
        total = 0.5 * (softmax_ce + self.dot_weight * similarity + self.div_weight * diversity)
        return GCAHNGLoss(total, softmax_ce, similarity, diversity)

    def node_loss(self, out: GeneratedNegatives) -> Tensor:
        """Node-classification CE of the GNN (official ``J_gce``, part of the metric step)."""
        return F.cross_entropy(out.node_logits, out.node_labels)

    def __repr__(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        return (f"{self.__class__.__name__}({self.dim}, num_classes={self.num_classes}, "
                f"edges={self.edges!r}{k}, alpha={self.alpha}, rw={self.rw!r}, "
                + (f"fixed_lambda={self.fixed_lambda}, " if self.fixed_lambda is not None else "")
                + f"layers={self.gnn.num_layers}, heads={self.gnn.heads})")
