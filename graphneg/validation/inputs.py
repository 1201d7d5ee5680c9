"""Checks of tensor inputs of the building blocks: the graph inputs of the message-passing layers
(structure only, read from tensor metadata: no host sync, traced away by ``torch.compile``), synthetic
negatives and pytorch-metric-learning index tuples of the metric losses, UnReMix candidates and view
partners, single graphs of the graph augmentations (:mod:`graphneg.validation`)."""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from graphneg.validation.core import check_embeddings, check_labels, check_same_width, value_checks_enabled

__all__ = [
    "check_node_features", "check_adjacency", "check_edge_features", "check_edge_mask",
    "SyntheticNegatives", "check_synthetic", "check_indices_tuple", "check_candidates", "check_partner",
    "check_single_graph",
]


# graph inputs of the message-passing layers (graphneg.nn): structure only, read from tensor
# metadata, so they cost no host sync and are traced away by torch.compile -------------------------
def _is_sparse_adjacency(adj) -> bool:
    """A ``torch.sparse`` tensor (COO / CSR / CSC) or a ``torch_sparse.SparseTensor``."""
    if isinstance(adj, Tensor):
        return adj.layout in (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc)
    from torch_geometric.typing import SparseTensor  # PyG's placeholder class without torch_sparse

    return isinstance(adj, SparseTensor)


def check_node_features(x: Tensor, channels: Optional[int] = None, name: str = "x") -> None:
    """Raise unless ``x`` is a floating ``[N, channels]`` tensor (any ``channels`` when ``None``
    or ``-1``, a lazily initialised layer). Structure only: no host sync.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: not two-dimensional, not floating, or the wrong number of channels.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of node features [N, C], got {type(x).__name__}")
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating tensor of node features [N, C], got {x.dtype} of shape "
            f"{tuple(x.shape)}; flatten with x.flatten(1) and convert with x.float()"
        )
    if channels is not None and channels > 0 and x.size(1) != channels:
        raise ValueError(
            f"{name} must have {channels} channels (the layer's in_channels), got shape {tuple(x.shape)}; "
            f"build the layer with in_channels={x.size(1)} (or -1 for lazy initialisation)"
        )


def check_adjacency(edge_index, num_nodes: int, name: str = "edge_index") -> None:
    """Raise unless ``edge_index`` is a graph on ``num_nodes`` nodes in a form PyG layers accept:
    an integer ``[2, E]`` tensor (row 0 = source), or a square ``[N, N]`` adjacency as a
    ``torch.sparse`` tensor (COO / CSR / CSC; extra dense dimensions hold edge features) or a
    ``torch_sparse.SparseTensor`` (rows = targets, PyG's ``adj_t``). Structure only: the node ids
    are not range-checked (that would need a host sync).

    Raises:
        TypeError: any other type, or a non-integer index tensor.
        ValueError: the wrong shape, or a sparse adjacency of another size than ``[N, N]``.
    """
    if _is_sparse_adjacency(edge_index):
        size = (tuple(edge_index.sparse_sizes()) if not isinstance(edge_index, Tensor)
                else tuple(edge_index.shape[:2]))
        if size != (num_nodes, num_nodes):
            raise ValueError(
                f"{name} as a sparse adjacency must have size [N, N] = [{num_nodes}, {num_nodes}] "
                f"(N = number of nodes of x), got {list(size)}"
            )
        return
    if not isinstance(edge_index, Tensor):
        raise TypeError(
            f"{name} must be a LongTensor [2, E], a torch.sparse adjacency or a torch_sparse.SparseTensor, "
            f"got {type(edge_index).__name__}"
        )
    if edge_index.is_floating_point() or edge_index.is_complex() or edge_index.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer node indices, got dtype {edge_index.dtype}; pass edge_index.long()")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f"{name} must have shape [2, E] (row 0 = source, row 1 = target), got {tuple(edge_index.shape)}; "
            "transpose an [E, 2] list of pairs with .t()"
        )


def check_edge_features(
    edge_attr, num_edges: int, num_nodes: int, channels: Optional[int] = None, name: str = "edge_attr",
) -> None:
    """Raise unless ``edge_attr`` holds one feature row per edge: a floating ``[E, channels]``
    tensor (any ``channels`` when ``None`` or ``-1``). The message names E and N, so that node
    features passed as edge features (or a graph with other edges) are told apart at once.

    Raises:
        TypeError: ``edge_attr`` is missing or not a tensor.
        ValueError: the wrong shape or dtype.
    """
    want = f"[E, C] = [{num_edges}, {channels if channels is not None and channels > 0 else 'C'}]"
    if not isinstance(edge_attr, Tensor):
        raise TypeError(
            f"{name} is required: a floating tensor {want}, one row per edge of edge_index (E = {num_edges} "
            f"edges on N = {num_nodes} nodes), got {type(edge_attr).__name__}"
        )
    if (edge_attr.dim() != 2 or edge_attr.size(0) != num_edges or not edge_attr.is_floating_point()
            or (channels is not None and channels > 0 and edge_attr.size(1) != channels)):
        raise ValueError(
            f"{name} must hold one feature row per edge, in edge_index's order: expected {want} for "
            f"E = {num_edges} edges on N = {num_nodes} nodes, got {edge_attr.dtype} of shape "
            f"{tuple(edge_attr.shape)}"
        )


def check_edge_mask(mask, num_edges: int, name: str = "attn_mask") -> None:
    """Raise unless ``mask`` is ``None`` or a bool ``[E]`` tensor (one entry per edge)."""
    if mask is None:
        return
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (num_edges,):
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(
            f"{name} must be a bool tensor of shape [E] = [{num_edges}] (True = the edge takes part), got {got}"
        )


class SyntheticNegatives(NamedTuple):
    """Validated synthetic negatives: ``x`` ``[M, D]``, ``labels`` ``[M]``, ``anchor_index`` ``[M]`` and
    ``mask``: ``None`` (every row is a synthetic negative) or a bool ``[M]`` on the embeddings' device
    (``True`` = a real synthetic negative, ``False`` = a padding row that every loss ignores; the padded,
    static-shape layout of :class:`graphneg.nn.GCAHNG` on CUDA, issue 21). With a mask, ``labels`` and
    ``anchor_index`` hold 0 on the padding rows (so they index safely)."""

    x: Tensor
    labels: Tensor
    anchor_index: Tensor
    mask: Optional[Tensor] = None


def check_synthetic(
    embeddings: Tensor,
    labels: Tensor,
    neg_embeddings: Optional[Tensor],
    neg_labels: Optional[Tensor],
    anchor_index: Optional[Tensor],
    neg_mask: Optional[Tensor] = None,
) -> Optional[SyntheticNegatives]:
    """Validate the optional synthetic negatives; ``None`` when none are given.

    ``neg_mask`` (optional bool ``[M]``): which rows are real synthetic negatives (``None``: all); the
    value checks (anchor range, "not the anchor's class") look at those rows only, and the padding rows'
    ``labels`` / ``anchor_index`` are replaced by 0 (no host sync: ``masked_fill``). Padding rows of
    ``neg_embeddings`` must be finite (zeros in :class:`graphneg.nn.GCAHNG`'s padded layout).

    Raises a clear ``ValueError`` for a partial set of arguments, a wrong shape or dimension, a
    ``neg_mask`` without synthetic negatives or not a bool ``[M]`` tensor, and (value checks) an
    ``anchor_index`` outside ``[0, B)`` or a synthetic negative that carries its anchor's class.
    """
    given = {"neg_embeddings": neg_embeddings, "neg_labels": neg_labels, "anchor_index": anchor_index}
    if all(v is None for v in given.values()):
        if neg_mask is not None:
            raise ValueError(
                "neg_mask was given without synthetic negatives: pass it together with neg_embeddings [M, D], "
                "neg_labels [M] and anchor_index [M] (or drop neg_mask)"
            )
        return None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(
            "synthetic negatives need neg_embeddings [M, D], neg_labels [M] and anchor_index [M] "
            f"together; missing: {', '.join(missing)}"
        )
    check_same_width(neg_embeddings, embeddings, "neg_embeddings")
    m = neg_embeddings.size(0)
    neg_labels = check_labels(neg_labels, m, "neg_labels").to(embeddings.device)
    if not isinstance(anchor_index, Tensor):
        anchor_index = torch.as_tensor(anchor_index)
    if anchor_index.dim() != 1 or anchor_index.numel() != m:
        raise ValueError(
            f"anchor_index must have one entry per synthetic negative: expected shape [{m}], got "
            f"{tuple(anchor_index.shape)}"
        )
    if anchor_index.is_floating_point() or anchor_index.dtype == torch.bool:
        raise ValueError(f"anchor_index must hold integer row indices, got dtype {anchor_index.dtype}")
    anchor_index = anchor_index.to(device=embeddings.device, dtype=torch.long)
    if neg_mask is not None:
        if not isinstance(neg_mask, Tensor) or neg_mask.dtype != torch.bool or tuple(neg_mask.shape) != (m,):
            got = (f"{neg_mask.dtype} {tuple(neg_mask.shape)}" if isinstance(neg_mask, Tensor)
                   else type(neg_mask).__name__)
            raise ValueError(
                f"neg_mask must be a bool tensor of shape [M] = [{m}] (one entry per synthetic negative, "
                f"True = a real one, False = padding), got {got}; pass e.g. neg_mask.bool()"
            )
        neg_mask = neg_mask.to(embeddings.device)
    n = embeddings.size(0)
    if m and value_checks_enabled():
        bad = (anchor_index < 0) | (anchor_index >= n)
        if bool((bad if neg_mask is None else bad & neg_mask).any()):
            shown = anchor_index if neg_mask is None else anchor_index[neg_mask]
            raise ValueError(
                f"anchor_index must index rows of embeddings, i.e. lie in [0, {n}); got values in "
                f"[{int(shown.min())}, {int(shown.max())}]"
            )
    if neg_mask is not None:
        pad = ~neg_mask
        anchor_index, neg_labels = anchor_index.masked_fill(pad, 0), neg_labels.masked_fill(pad, 0)
    if m and value_checks_enabled():
        own = neg_labels == labels[anchor_index]
        if bool((own if neg_mask is None else own & neg_mask).any()):
            raise ValueError(
                "a synthetic negative carries its anchor's class (neg_labels[k] == labels[anchor_index[k]]); "
                "neg_labels must be the class of the real negative each sample was generated from"
            )
    return SyntheticNegatives(neg_embeddings, neg_labels, anchor_index, neg_mask)


def check_indices_tuple(indices_tuple, n: int, r: int, owner: str) -> Tuple[Tensor, ...]:
    """A PML miner tuple: pairs ``(a1, p, a2, n)`` or triplets ``(a, p, n)`` of 1-D integer tensors;
    anchors in ``[0, n)``, the others in ``[0, r)`` (value check)."""
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        size = len(indices_tuple) if hasattr(indices_tuple, "__len__") else "?"
        raise ValueError(
            f"{owner}: indices_tuple must be a PML miner tuple, pairs (a1, p, a2, n) or triplets (a, p, n), "
            f"got {type(indices_tuple).__name__} of length {size}"
        )
    out = []
    for i, t in enumerate(indices_tuple):
        t = torch.as_tensor(t)
        if t.dim() != 1 or t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(
                f"{owner}: indices_tuple[{i}] must be a 1-D integer tensor, got {t.dtype} {tuple(t.shape)}")
        out.append(t.long())
    lengths = [t.numel() for t in out]
    pairs_ok = len(out) == 4 and lengths[0] == lengths[1] and lengths[2] == lengths[3]
    if not (pairs_ok or (len(out) == 3 and len(set(lengths)) == 1)):
        raise ValueError(f"{owner}: indices_tuple lengths do not match: {lengths}")
    if value_checks_enabled():
        anchors = (0, 2) if len(out) == 4 else (0,)
        for i, t in enumerate(out):
            hi = n if i in anchors else r
            if t.numel() and bool(((t < 0) | (t >= hi)).any()):
                raise ValueError(f"{owner}: indices_tuple[{i}] must lie in [0, {hi}), got values in "
                                 f"[{int(t.min())}, {int(t.max())}]")
    return tuple(out)


def check_candidates(z: Tensor, candidates: Tensor, pos_index: Optional[Tensor], neg_mask: Tensor) -> None:
    """UnReMix inputs: anchors ``z [N, D]``, candidates ``[C, D]``, ``neg_mask [N, C]`` (bool) and the
    optional positive column per anchor ``pos_index [N]`` (values: in range, not marked negative)."""
    check_embeddings(z, "z")
    check_same_width(candidates, z, "candidates", "z")
    n, c = z.size(0), candidates.size(0)
    if neg_mask.dtype != torch.bool or tuple(neg_mask.shape) != (n, c):
        raise ValueError(
            f"neg_mask must be a bool tensor of shape [N, C] = [{n}, {c}] (anchors x candidates), got "
            f"dtype {neg_mask.dtype} and shape {tuple(neg_mask.shape)}"
        )
    if pos_index is not None:
        if pos_index.dim() != 1 or pos_index.numel() != n or pos_index.is_floating_point():
            raise ValueError(
                f"pos_index must be an integer vector [N] = [{n}] holding each anchor's positive "
                f"column, got dtype {pos_index.dtype} and shape {tuple(pos_index.shape)}"
            )
        if n and value_checks_enabled() and bool(((pos_index < 0) | (pos_index >= c)).any()):
            raise ValueError(f"pos_index entries must lie in [0, {c}) (columns of the candidates)")
        if n and value_checks_enabled() and bool(neg_mask.gather(1, pos_index.long()[:, None]).any()):
            raise ValueError("neg_mask marks an anchor's positive as a negative; unset those entries")


def check_partner(partner: Tensor, c: int) -> None:
    """``partner [C]``: each candidate's positive column (-1 for none), an involution (values)."""
    if partner.dim() != 1 or partner.numel() != c or partner.is_floating_point() or partner.dtype == torch.bool:
        raise ValueError(
            f"partner must be an integer vector [C] = [{c}] holding each candidate's positive "
            f"column (-1 for none), got dtype {partner.dtype} and shape {tuple(partner.shape)}"
        )
    if c and value_checks_enabled():
        p = partner.long()
        back = p.clamp(0, c - 1)
        if bool(((p < -1) | (p >= c)).any()) or bool(((p >= 0) & (p.index_select(0, back) != torch.arange(
                c, device=p.device))).any()):
            raise ValueError(
                "partner must pair candidates both ways (partner[partner[j]] == j, entries in [-1, C)), "
                "as the two views of a sample are; use -1 for a candidate without a positive view"
            )


def check_single_graph(data, who: str) -> None:
    """One graph (a PyG ``Data`` with ``edge_index`` and at least one node), not a ``Batch``: the input
    of a per-graph augmentation ``who``."""
    from torch_geometric.data import Batch, Data

    if isinstance(data, Batch):
        raise ValueError(
            f"{who} augments single graphs (torch_geometric.data.Data), got a Batch; set it as the "
            "dataset transform (dataset.transform = ...) so it runs per graph before collation"
        )
    if not isinstance(data, Data):
        raise ValueError(f"{who} expects a torch_geometric.data.Data, got {type(data).__name__}")
    if data.edge_index is None:
        raise ValueError(f"{who}: the graph has no edge_index (use an empty [2, 0] tensor for no edges)")
    if data.num_nodes is None or data.num_nodes == 0:
        raise ValueError(f"{who}: the graph has no nodes; augmentations need at least one node")
