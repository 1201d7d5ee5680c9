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
* ``edges="knn"`` (sparse graph) and graphs given by the caller are additions (see :class:`GCAHNG`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from graphneg.distributed import gather, is_distributed
from graphneg.graph import EDGE_MODES, batch_graph, check_edge_mode
from graphneg.losses.metric import PMLInputs, synthetic_indices_tuple
from graphneg.ops.labels import next_positive_index, rank_in_class
from graphneg.validation import check_embeddings, check_labels, check_multiclass, value_checks_enabled
from graphneg.nn.functional import gather_cosine, gather_distance, gather_lerp, group_squared_deviation
from graphneg.nn.gca_gnn import GCAGNN, GCAGNNOutput
from graphneg.precision import full_precision, to_float32

RW_MODES = ("chain", "dirichlet", None)


class NegativePairs(NamedTuple):
    """The ``P`` (anchor, real negative) pairs the synthetic negatives are made from.

    Pair ``p`` is the graph edge ``edge[p]`` (``anchor -> negative``, official edge ``(r, c)``), one
    per edge joining two classes. Attributes, all ``[P]`` except ``x``:

    * ``anchor``, ``negative``: rows of the embeddings (``edge_index[:, edge]``);
    * ``edge``: the column of ``edge_index``, so ``lambda_an = gnn.lam[edge]``;
    * ``group``: the row of :attr:`GeneratedNegatives.x` the pair is mixed into;
    * ``weight``: its convex mixing weight (ones when ``rw=None``);
    * ``hard``: ``d+ < d-`` (``False``: the real negative itself was returned);
    * ``x``: the generated negative before mixing ``[P, D]`` (``None`` with random weighting
      unless ``return_pairs=True``; equal to :attr:`GeneratedNegatives.x` when ``rw=None``).
    """

    anchor: Tensor
    negative: Tensor
    edge: Tensor
    group: Tensor
    weight: Tensor
    hard: Tensor
    x: Optional[Tensor]


@dataclass
class GeneratedNegatives:
    """Output of :meth:`GCAHNG.forward`.

    Attributes:
        x: ``G`` synthetic negatives ``[G, D]``. Without random weighting (``rw=None``) row ``g``
            is pair ``g``; with it, row ``g`` mixes the pairs with ``pairs.group == g`` (one row
            per anchor and other class present among its negatives).
        labels: their class, the class of the real negatives they come from ``[G]``.
        anchor_index: the anchor (row of the embeddings) of each synthetic negative ``[G]``.
        pairs: per-pair details (:class:`NegativePairs`).
        graph: the batch graph the generator ran on, ``Data(x=embeddings, y=labels,
            edge_index)`` (``graph.x`` is the input tensor itself, not a copy).
        gnn: the :class:`~graphneg.nn.GCAGNNOutput` on that graph: ``lam`` ``[E, D]``
            (interpolation vectors, never detached here), node ``logits`` ``[B, num_classes]``.

    ``x, labels, anchor_index`` go straight into a graphneg metric loss (``loss(emb, y,
    neg_embeddings=neg.x, neg_labels=neg.labels, anchor_index=neg.anchor_index)``); :meth:`pml_inputs`
    gives the pytorch-metric-learning form.
    """

    x: Tensor
    labels: Tensor
    anchor_index: Tensor
    pairs: NegativePairs
    graph: Data
    gnn: GCAGNNOutput

    def pml_inputs(self, kind: str = "pairs") -> PMLInputs:
        """``(ref_emb, ref_labels, indices_tuple)`` for a pytorch-metric-learning loss:
        ``pml_loss(emb, y, t.indices_tuple, t.ref_emb, t.ref_labels)``
        (:func:`graphneg.losses.metric.synthetic_indices_tuple`)."""
        return synthetic_indices_tuple(self.graph.x, self.graph.y, self.x, self.labels,
                                       self.anchor_index, kind)


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
    scale: Union[float, Tensor] = 1.0, eps: float = 1e-12, *,
    anchor_index: Optional[Tensor] = None, negative_index: Optional[Tensor] = None,
    lam_index: Optional[Tensor] = None,
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
    ``z~`` lies channel-wise on the segment from ``z_a`` to ``z_n``. The one implementation used
    by :class:`GCAHNG`; the per-channel part runs in the fused
    :func:`graphneg.nn.functional.gather_lerp` (no ``[P, D]`` gather is kept for backward).

    Shapes: per pair, ``anchor, negative, lam`` :math:`(P, D)`; ``d_pos, d_neg`` :math:`(P,)`;
    returns ``(z~ (P, D), hard (P,))``. With ``anchor_index`` / ``negative_index`` (``[P]``),
    ``anchor`` and ``negative`` are node tensors (may be the same tensor) read at those rows, and
    with ``lam_index`` ``lam`` is an edge tensor read at those rows (``lam[lam_index]``).
    """
    hard = d_pos < d_neg
    rho = torch.where(hard, d_pos / d_neg.clamp_min(eps), torch.ones_like(d_pos))
    p, device = d_pos.numel(), d_pos.device
    ia = torch.arange(p, device=device) if anchor_index is None else anchor_index
    ib = torch.arange(p, device=device) if negative_index is None else negative_index
    il = torch.arange(p, device=device) if lam_index is None else lam_index
    if anchor is negative:
        x = anchor
    else:  # one node tensor: negatives follow the anchors
        x = torch.cat([anchor, negative])
        ib = ib + anchor.size(0)
    return gather_lerp(x, ia, ib, rho, lam, il, scale), hard


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


class GCAHNG(nn.Module):
    r"""GCA-HNG hard-negative generator (official ``GCA_HNG`` minus backbone and metric loss).

    ``forward(embeddings, labels)`` runs :class:`~graphneg.nn.GCAGNN` on the batch graph and
    generates, for every edge ``a -> n`` joining two classes (official edge ``(r, c) = (a, n)``),
    the channel-wise HDML interpolation (:func:`hdml_interpolate`) with ``lambda_an`` read on that
    edge; the positive that sets ``d+`` is :func:`graphneg.losses.metric.next_positive_index`.
    The generated label is the negative's class.

    The graph: ``forward(..., edge_index=...)`` runs on any graph the caller gives (e.g. from
    :func:`graphneg.graph.batch_graph`, any sparsity); the negatives of ``a`` are then its
    other-class out-neighbours. Without it the generator builds
    ``batch_graph(embeddings, labels, edges=self.edges, k=self.k)`` (one graph builder):

    * ``"complete"`` (official): all ordered pairs including self-loops, ``E = B^2``; the negatives
      of ``a`` are all other-class samples. Memory ``O(B^2 D)`` as in the official code.
    * ``"knn"`` (sparse, class-aware): each node's ``k`` most similar (cosine) other-class nodes,
      symmetrised (so edge features stay symmetric and every node attends to at least ``k``
      negatives), plus all same-class pairs with self-loops. ``E <= 2 B k + sum_c m_c^2``, memory
      ``O(B k D)``. The negatives of ``a`` are its ``k`` nearest other-class nodes and the nodes
      that have ``a`` among theirs.
    * the other modes of :data:`graphneg.graph.EDGE_MODES` (``"negative"``, ``"knn_negative"``)
      work too; ``"positive"`` has no edge between classes and is refused.

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
        edges (str): a mode of :data:`graphneg.graph.EDGE_MODES` (default ``"complete"``).
        k (int, optional): neighbours per node for the kNN modes.
        alpha (float): hardness schedule ``lam' = lam * exp(-alpha / J_mean)``.
        rw (str or None): ``"chain"``, ``"dirichlet"`` or ``None``.
        softmax_factor, dot_weight, div_weight (float): weights of the generator loss.
        dropout (float): node-to-edge attention dropout (official ``0.1``).
        hidden_channels (int, optional): FFN hidden size (default ``4 * dim``).
        gather_distributed (bool): inside a ``torch.distributed`` process group (Lightning DDP),
            :meth:`forward` first gathers ``embeddings`` and ``labels`` from all processes
            (:func:`graphneg.distributed.gather`, differentiable, any per-process batch size), so the
            batch graph, the generated negatives and every index in :class:`GeneratedNegatives`
            refer to the *global* batch (``out.graph.x``, ``out.graph.y``); feed those to the
            metric loss. Every process then computes the same global losses, and gather's
            ``all_reduce`` backward plus DDP's gradient average give exactly the single-process
            gradients (``tests/test_distributed.py``). Random draws (``rw``, ``dropout``) must agree
            across processes: pass the same seeded ``generator`` / seed every rank alike
            (Lightning's ``seed_everything``). (default ``False``)
        checkpoint (bool): activation checkpointing in every GCA block (:class:`GCAGNN`): the
            ``[E, 4D]`` hidden layer of the edge MLP is recomputed in the backward pass instead of
            kept (one extra ``D -> 4D`` product per block, about 5 % more time for a third less
            peak memory in complete mode); same values and gradients. (default ``False``)
        fixed_lambda (float, optional): replace the GNN's ``lambda`` by this constant in the
            generation (ablation): with ``1.0`` it is exactly HDML's interpolation (Zheng et al.,
            CVPR 2019, Eq. 4: ``r = (d+ + (d- - d+) exp(-alpha / J_mean)) / d-``). The GNN still runs
            (node loss, diversity); ``out.gnn.lam`` still reports its (unused) output.

    Mixed precision: the GNN's matrix products follow autocast; the generation (distances,
    interpolation, mixing) and :meth:`loss` / :meth:`node_loss` run in float32.
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
        gather_distributed: bool = False,
        checkpoint: bool = False,
        fixed_lambda: Optional[float] = None,
    ):
        super().__init__()
        check_edge_mode(edges, k)
        if edges == "positive":
            raise ValueError(
                "edges='positive' joins same-class samples only, so there is no anchor -> negative "
                f"edge to generate from; use one of {tuple(m for m in EDGE_MODES if m != 'positive')}"
            )
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
        if not isinstance(gather_distributed, bool):
            raise TypeError(f"gather_distributed must be True or False, got {gather_distributed!r}")
        self.gather_distributed = gather_distributed
        self.gnn = GCAGNN(dim, num_classes, num_layers, heads, hidden_channels, dropout,
                          checkpoint=checkpoint)

    def reset_parameters(self) -> None:
        self.gnn.reset_parameters()

    @property
    def checkpoint(self) -> bool:
        """Activation checkpointing per GCA block (stored on :attr:`gnn`)."""
        return self.gnn.checkpoint

    # graph ------------------------------------------------------------------------------------
    def build_graph(self, embeddings: Tensor, labels: Tensor) -> Data:
        """The generator's own graph: ``batch_graph(embeddings, labels, edges=self.edges, k=self.k)``."""
        return batch_graph(embeddings, labels, edges=self.edges, k=self.k)

    @staticmethod
    def _given_graph(embeddings: Tensor, labels: Tensor, edge_index) -> Data:
        if isinstance(edge_index, Data):
            raise TypeError("edge_index must be the graph's edge_index tensor [2, E]; pass "
                            "graph.edge_index rather than the Data object")
        if not isinstance(edge_index, Tensor):
            raise TypeError(f"edge_index must be a torch.Tensor of shape [2, E], got {type(edge_index).__name__}")
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"edge_index must have shape [2, E] (row 0 = source), got {tuple(edge_index.shape)}")
        if edge_index.is_floating_point() or edge_index.dtype == torch.bool:
            raise ValueError(f"edge_index must hold integer node indices, got dtype {edge_index.dtype}")
        n = embeddings.size(0)
        edge_index = edge_index.to(device=embeddings.device, dtype=torch.long)
        if edge_index.numel() and value_checks_enabled() and bool(((edge_index < 0) | (edge_index >= n)).any()):
            raise ValueError(
                f"edge_index must index rows of embeddings, i.e. lie in [0, {n}); got values in "
                f"[{int(edge_index.min())}, {int(edge_index.max())}]"
            )
        return Data(x=embeddings, y=labels, edge_index=edge_index, num_nodes=n)

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
        edge_index: Optional[Tensor] = None,
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
            return_pairs: keep the per-pair negatives ``pairs.x`` before mixing (always kept
                when ``rw=None``, where they are ``x``); off by default to save ``P x D`` memory.
            edge_index: optional graph ``[2, E]`` (``edge_index[0]`` = source) to run on, e.g.
                ``batch_graph(embeddings, labels, edges="knn", k=8).edge_index``; it must have
                at least one edge between two classes. Default: :meth:`build_graph`.
        """
        check_embeddings(embeddings)
        embeddings = to_float32(embeddings)  # generation math in float32 under mixed precision
        if self.gather_distributed and is_distributed():  # the graph spans the global batch
            labels = check_labels(labels, embeddings.size(0)).to(embeddings.device)
            embeddings, labels = gather(embeddings, labels)
        b, d = embeddings.shape
        if d != self.dim:
            raise ValueError(f"embeddings have {d} channels but the generator was built with dim={self.dim}")
        labels = check_labels(labels, b, num_classes=self.num_classes).to(embeddings.device)
        check_multiclass(labels)
        scale = self._scale(j_mean, embeddings)
        if edge_index is None:
            graph = self.build_graph(embeddings, labels)
        else:
            graph = self._given_graph(embeddings, labels, edge_index)
        src, tgt = graph.edge_index
        pair_edge = (labels.index_select(0, src) != labels.index_select(0, tgt)).nonzero().view(-1)
        if pair_edge.numel() == 0:
            raise ValueError(
                "the graph has no edge between samples of different classes, so there is no "
                "anchor -> negative pair to generate from; add other-class edges (e.g. "
                "batch_graph(x, labels, edges='knn', k=...))"
            )
        out = self.gnn(embeddings, graph.edge_index, labels=labels)
        a, n = src.index_select(0, pair_edge), tgt.index_select(0, pair_edge)

        pos = next_positive_index(labels)
        d_pos = F.pairwise_distance(embeddings, embeddings.index_select(0, pos))  # official eps 1e-6
        d_neg = gather_distance(embeddings, a, n)  # == F.pairwise_distance(z[a], z[n])
        lam = to_float32(out.lam)  # generation in float32 under mixed precision
        lam_index = pair_edge
        if self.fixed_lambda is not None:  # ablation: one constant lambda for every pair and channel (HDML: 1.0)
            lam, lam_index = embeddings.new_full((1, d), self.fixed_lambda), torch.zeros_like(pair_edge)
        pair_x, hard = hdml_interpolate(
            embeddings, embeddings, d_pos.index_select(0, a), d_neg,
            lam.detach() if detach_lam else lam, scale,
            anchor_index=a, negative_index=n, lam_index=lam_index,
        )

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
        pairs = NegativePairs(
            anchor=a, negative=n, edge=pair_edge, group=pair_group, weight=weights, hard=hard,
            x=pair_x if (return_pairs or self.rw is None) else None,
        )
        return GeneratedNegatives(x=x, labels=out_labels, anchor_index=out_anchor, pairs=pairs,
                                  graph=graph, gnn=out)

    # losses -----------------------------------------------------------------------------------
    @full_precision
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
        # == F.cosine_similarity(graph.x[anchor_index], out.x); no gathered [P, D] anchor copy
        similarity = (1.0 - gather_cosine(out.graph.x, out.anchor_index, out.x)).mean()
        diversity = 1e-2 * diversity_loss(to_float32(out.gnn.lam), out.graph.edge_index, out.graph.num_nodes)
        total = 0.5 * (softmax_ce + self.dot_weight * similarity + self.div_weight * diversity)
        return GCAHNGLoss(total, softmax_ce, similarity, diversity)

    @full_precision
    def node_loss(self, out: GeneratedNegatives) -> Tensor:
        """Node-classification CE of the GNN (official ``J_gce``, part of the metric step)."""
        return F.cross_entropy(to_float32(out.gnn.logits), out.graph.y)

    def __repr__(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        ckpt = ", checkpoint=True" if self.checkpoint else ""
        return (f"{self.__class__.__name__}({self.dim}, num_classes={self.num_classes}, "
                f"edges={self.edges!r}{k}, alpha={self.alpha}, rw={self.rw!r}, "
                + (f"fixed_lambda={self.fixed_lambda}, " if self.fixed_lambda is not None else "")
                + f"layers={self.gnn.num_layers}, heads={self.gnn.heads}{ckpt})")
