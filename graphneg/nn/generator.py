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
import warnings
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from graphneg.distributed import gather_layout, gather_rows
from graphneg.graph import EDGE_MODES, batch_graph, check_edge_mode
from graphneg.nn.functional import gather_distance
from graphneg.nn.gca_gnn import GCAGNN
from graphneg.nn.negatives import GeneratedNegatives, NegativePairs  # noqa: F401  (public here too)
from graphneg.nn.generation import (  # noqa: F401  (public here too: graphneg.nn.generator.hdml_interpolate)
    chain_weights, dirichlet_weights, hdml_interpolate, rank_within_groups, static_groups,
)
from graphneg.ops.labels import next_positive_index, rank_in_class
from graphneg.ops.random import draw_seed
from graphneg.precision import to_float32
from graphneg.validation import (
    check_batch, check_embeddings, check_labels, value_checks, value_checks_enabled,
)

__all__ = ["GCAHNG", "GeneratedNegatives", "NegativePairs", "RW_MODES", "COMPACT_DEVICE_TYPES"]

RW_MODES = ("chain", "dirichlet", None)

#: device types on which ``static_shapes=None`` returns the compact layout (a host sync costs nothing on
#: the CPU); on every other device (CUDA, ...) the padded layout, so a training step has no host sync
COMPACT_DEVICE_TYPES = {"cpu"}


class GCAHNG(nn.Module):
    r"""GCA-HNG hard-negative generator (official ``GCA_HNG`` minus backbone and metric loss).

    ``forward(embeddings, labels)`` runs :class:`~graphneg.nn.GCAGNN` on the batch graph and
    generates, for every edge ``a -> n`` joining two classes (official edge ``(r, c) = (a, n)``),
    the channel-wise HDML interpolation (:func:`hdml_interpolate`) with ``lambda_an`` read on that
    edge; the positive that sets ``d+`` is :func:`graphneg.ops.labels.next_positive_index`.
    The generated label is the negative's class.

    Training: the official three-step update (metric step with detached ``lambda``, classifier
    step, generator-only step, running means of the losses) is :class:`graphneg.losses.GCAHNGObjective`,
    which works in a plain PyTorch loop and inside :class:`graphneg.models.MetricLearningModule`; the
    generator's own losses are :func:`graphneg.losses.gca_hng.generator_loss` and
    :func:`graphneg.losses.gca_hng.node_loss`.

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
    ``alpha=5, dot_weight=20, div_weight=60``. ``softmax_factor``, ``dot_weight`` and ``div_weight`` are
    the weights of the generator's loss (:func:`graphneg.losses.gca_hng.generator_loss` reads them
    from here), kept with the generator so that one config states them.

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
            (:func:`graphneg.distributed.gather_layout` decides, :func:`graphneg.distributed.gather_rows`
            gathers: differentiable, any per-process batch size), so the
            batch graph, the generated negatives and every index in :class:`GeneratedNegatives`
            refer to the *global* batch (``out.graph.x``, ``out.graph.y``); feed those to the
            metric loss. Every process then computes the same global losses, and gather's
            ``all_reduce`` backward plus DDP's gradient average give exactly the single-process
            gradients (``tests/test_distributed.py``). Random draws (``rw``, ``dropout``) must agree
            across processes: pass the same seeded ``generator`` / seed every rank alike
            (Lightning's ``seed_everything``). (default ``False``)
        recompute_hidden (bool): in every GCA block (:class:`GCAGNN`) the ``[E, 4D]`` hidden layer
            of the edge MLP is recomputed in the backward pass instead of kept (one extra
            ``D -> 4D`` product per block, about 5 % more time for a third less peak memory in
            complete mode); same values and gradients. Passed straight down to the layers.
            (default ``False``)
        checkpoint (bool, deprecated): the former name of ``recompute_hidden``.
        static_shapes (bool, optional): the layout of the output. ``True``: padded, a static number of
            rows with :attr:`GeneratedNegatives.mask` (no host synchronisation in :meth:`forward`, for
            CUDA and ``torch.compile``); ``False``: compact, exactly one row per synthetic negative (the
            row count is read on the host). The real rows and every value are the same in both.
            ``None`` (default): compact on the CPU (:data:`COMPACT_DEVICE_TYPES`), padded elsewhere.
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
        recompute_hidden: bool = False,
        fixed_lambda: Optional[float] = None,
        checkpoint: Optional[bool] = None,
        static_shapes: Optional[bool] = None,
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
        if checkpoint is not None:
            warnings.warn("GCAHNG(checkpoint=...) is deprecated: use recompute_hidden=... (the same switch; "
                          "'checkpoint' also names the graphneg.checkpoint package)", DeprecationWarning, stacklevel=2)
            recompute_hidden = bool(checkpoint)
        if not isinstance(recompute_hidden, bool):
            raise TypeError(f"recompute_hidden must be True or False, got {recompute_hidden!r}")
        self.recompute_hidden = recompute_hidden
        if static_shapes is not None and not isinstance(static_shapes, bool):
            raise TypeError(f"static_shapes must be True, False or None (by device), got {static_shapes!r}")
        self.static_shapes = static_shapes
        self.gnn = GCAGNN(dim, num_classes, num_layers, heads, hidden_channels, dropout,
                          recompute_hidden=recompute_hidden)

    def reset_parameters(self) -> None:
        self.gnn.reset_parameters()

    @property
    def checkpoint(self) -> bool:
        """Deprecated name of :attr:`recompute_hidden`."""
        warnings.warn("GCAHNG.checkpoint is deprecated: read recompute_hidden", DeprecationWarning, stacklevel=2)
        return self.recompute_hidden

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

    def hardness_scale(self, j_mean: Optional[Union[float, Tensor]] = None) -> Union[float, Tensor]:
        r"""The factor :math:`e^{-\alpha / J_{mean}}` that multiplies ``lambda`` (official
        ``GeneralPulling``: ``edge_params * np.exp(-self.alpha / jm)``); ``1.0`` for ``j_mean=None``.
        A tensor ``j_mean`` gives a tensor (no host sync), a number a float."""
        if j_mean is None:
            return 1.0
        if isinstance(j_mean, Tensor):
            return torch.exp(-self.alpha / j_mean)
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
        detach_lam: Optional[bool] = None,
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
                synthetic negatives carry gradients to the embeddings only. ``None`` (default)
                follows the official update: ``lambda`` is detached exactly when the embeddings
                carry gradients (the metric step: a metric loss on these negatives trains the
                encoder, never the generator), and live on detached embeddings (the generator
                step). ``False`` on embeddings that require grad lets a loss on ``out.x`` train
                ``lambda`` and the encoder at once (a metric loss would then teach the generator
                *easier* negatives) and warns.
            generator: ``torch.Generator`` the random weighting's seed is drawn from (one
                ``randint`` per call; the draws themselves are counter-based,
                :func:`graphneg.ops.random.counter_uniform`); default: the global generator of the
                embeddings' device.
            return_pairs: keep the per-pair negatives ``pairs.x`` before mixing (always kept
                when ``rw=None``, where they are ``x``); off by default to save ``P x D`` memory.
            edge_index: optional graph ``[2, E]`` (``edge_index[0]`` = source) to run on, e.g.
                ``batch_graph(embeddings, labels, edges="knn", k=8).edge_index``; it must have
                at least one edge between two classes. Default: :meth:`build_graph`.
        """
        detach_lam = self._detach_lam(detach_lam, embeddings)
        # validation, once per call: structure here (free), values with one host sync while value
        # checks are on (graphneg.validation.check_batch); the graph builder and the GNN below run
        # with value checks off
        check_embeddings(embeddings, values=False, dtype=next(self.parameters()).dtype, owner=type(self).__name__)
        embeddings = to_float32(embeddings)  # generation math in float32 under mixed precision
        labels = check_labels(labels, embeddings.size(0), values=False).to(embeddings.device)
        # the graph spans the global batch when gathering (graphneg.distributed.gather_layout decides)
        layout = gather_layout(embeddings.size(0), self.gather_distributed, embeddings.device)
        embeddings, labels = gather_rows(layout, embeddings, labels)
        b, d = embeddings.shape
        if d != self.dim:
            raise ValueError(f"embeddings have {d} channels but the generator was built with dim={self.dim}")
        if value_checks_enabled():
            check_batch(embeddings, labels, self.num_classes, "embeddings", "this batch")
        if isinstance(j_mean, Tensor):
            j_mean = j_mean.to(device=embeddings.device, dtype=embeddings.dtype)
        scale = self.hardness_scale(j_mean)
        graph = None if edge_index is None else self._given_graph(embeddings, labels, edge_index)
        check_values = value_checks_enabled()
        static = self.static_shapes
        if static is None:
            static = embeddings.device.type not in COMPACT_DEVICE_TYPES
        with value_checks(False):
            return self._generate(embeddings, labels, graph, scale, detach_lam, generator, return_pairs,
                                  static, check_values)

    def _detach_lam(self, detach_lam: Optional[bool], embeddings) -> bool:
        grad_path = isinstance(embeddings, Tensor) and embeddings.requires_grad and torch.is_grad_enabled()
        if detach_lam is None:
            return grad_path
        if not detach_lam and grad_path:
            warnings.warn(
                "GCAHNG called with detach_lam=False on embeddings that require grad: a loss on out.x now "
                "trains lambda (the generator) and the encoder at once, and a metric loss teaches the "
                "generator easier negatives. The official update generates with detach_lam=True for the "
                "metric step and from embeddings.detach() for the generator step "
                "(graphneg.losses.GCAHNGObjective does both; detach_lam=None picks the right one)",
                UserWarning, stacklevel=3,
            )
        return bool(detach_lam)

    def _generate(self, embeddings: Tensor, labels: Tensor, graph: Optional[Data], scale, detach_lam: bool,
                  generator: Optional[torch.Generator], return_pairs: bool, static: bool,
                  check_values: bool) -> GeneratedNegatives:
        """The generation on the padded layout (static shapes, no host sync); compacted at the end unless
        ``static`` (one host sync for the number of rows)."""
        b, d = embeddings.shape
        device = embeddings.device
        if graph is None:
            graph = self.build_graph(embeddings, labels)
        src, tgt = graph.edge_index
        num_edges = src.numel()
        edge_id = torch.arange(num_edges, device=device)
        neg_label = labels.index_select(0, tgt)
        cross = labels.index_select(0, src) != neg_label  # [E]: the anchor -> negative pairs
        if check_values and not bool(cross.any()):
            raise ValueError(
                "the graph has no edge between samples of different classes, so there is no "
                "anchor -> negative pair to generate from; add other-class edges (e.g. "
                "batch_graph(x, labels, edges='knn', k=...))"
            )
        out = self.gnn(embeddings, graph.edge_index, labels=labels)

        # every edge is interpolated (same-class edges are dropped below): no data-dependent pair count
        pos = next_positive_index(labels)
        d_pos = F.pairwise_distance(embeddings, embeddings.index_select(0, pos))  # official eps 1e-6
        d_neg = gather_distance(embeddings, src, tgt)  # == F.pairwise_distance(z[a], z[n])
        lam = to_float32(out.lam)  # generation in float32 under mixed precision
        lam_index = None  # lam is an edge tensor in edge order
        if self.fixed_lambda is not None:  # ablation: one constant lambda for every pair and channel (HDML: 1.0)
            lam, lam_index = embeddings.new_full((1, d), self.fixed_lambda), torch.zeros_like(src)
        pair_x, hard = hdml_interpolate(
            embeddings, embeddings, d_pos.index_select(0, src), d_neg,
            lam.detach() if detach_lam else lam, scale,
            anchor_index=src, negative_index=tgt, lam_index=lam_index,
        )
        hard = hard & cross

        # output rows: one per pair (rw=None) or per (anchor, negative class) group, keyed, sorted, and
        # numbered in key order (what torch.unique would give) into a static number of rows; rows past
        # the last group are padding (mask False), same-class edges go to a dropped dump row
        num_cls = self.num_classes
        if self.rw is None:
            key, rows = edge_id, num_edges
        else:
            key, rows = src * num_cls + neg_label, min(num_edges, b * max(min(num_cls - 1, b - 1), 0))
        group, mask, row_key = static_groups(key, cross, rows)  # group == rows: a same-class edge, no row
        if self.rw is None:
            edge_of_row = row_key.clamp(0, max(num_edges - 1, 0))
            out_anchor, out_labels = src.index_select(0, edge_of_row), neg_label.index_select(0, edge_of_row)
        else:
            out_anchor, out_labels = row_key.clamp_min(0) // num_cls, row_key.clamp_min(0) % num_cls
        zero = torch.zeros_like(out_anchor)
        out_anchor, out_labels = torch.where(mask, out_anchor, zero), torch.where(mask, out_labels, zero)

        if self.rw is None:
            weights = cross.to(embeddings.dtype)
        else:
            seed = draw_seed(generator, device)
            if self.rw == "chain":
                step, _ = rank_within_groups(group, tgt, rows + 1, b)
                weights = chain_weights(step, rank_in_class(labels).index_select(0, src), dtype=embeddings.dtype,
                                        group=group, seed=seed)
            else:
                weights = dirichlet_weights(group, rows + 1, dtype=embeddings.dtype, seed=seed,
                                            counter=edge_id)
            weights = torch.where(cross, weights, torch.zeros_like(weights))
        x = scatter(pair_x * weights.unsqueeze(1), group, dim=0, dim_size=rows + 1, reduce="sum")[:rows]
        pairs = NegativePairs(
            anchor=src, negative=tgt, edge=edge_id, group=group, weight=weights,
            hard=hard, x=pair_x if (return_pairs or self.rw is None) else None, valid=cross,
        )
        res = GeneratedNegatives(x=x, labels=out_labels, anchor_index=out_anchor, pairs=pairs, graph=graph,
                                 gnn=out, mask=mask)
        return res if static else res.compact()

    def __repr__(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        ckpt = ", recompute_hidden=True" if self.recompute_hidden else ""
        ckpt += f", static_shapes={self.static_shapes}" if self.static_shapes is not None else ""
        return (f"{self.__class__.__name__}({self.dim}, num_classes={self.num_classes}, "
                f"edges={self.edges!r}{k}, alpha={self.alpha}, rw={self.rw!r}, "
                + (f"fixed_lambda={self.fixed_lambda}, " if self.fixed_lambda is not None else "")
                + f"layers={self.gnn.num_layers}, heads={self.gnn.heads}{ckpt})")
