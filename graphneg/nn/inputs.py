"""The inputs of graphneg's message-passing layers, in every form PyG layers accept.

``edge_index`` may be an integer ``[2, E]`` tensor (row 0 = source ``j``, row 1 = target ``i``),
a ``torch.sparse`` adjacency (COO, CSR or CSC) or a ``torch_sparse.SparseTensor``. A sparse
adjacency follows PyG's convention (``MessagePassing.propagate``): it is ``adj_t``, its row is
the target and its column the source, ``adj_t[i, j] != 0`` for an edge ``j -> i``.

:func:`edge_index_and_attr` turns any of them into the ``[2, E]`` form once, at the start of a
layer's forward. The edges are then in the sparse tensor's storage order: row-major (sorted by
target, then source) for a coalesced COO tensor, a CSR tensor and a ``SparseTensor``,
column-major for CSC, which is the order of :func:`torch_geometric.utils.to_edge_index`. Edge
features given next to a sparse adjacency must be in that order, and the edge features a layer
returns are in that order too. When no ``edge_attr`` is given and the sparse values are 2-D
(``[E, F]``: a hybrid COO / CSR tensor with one dense dimension, or a ``SparseTensor`` with
matrix values), they are the edge features, as in PyG's ``propagate``.
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.index import ptr2index
from torch_geometric.typing import SparseTensor

from graphneg.validation import check_adjacency

Adj = Union[Tensor, SparseTensor]


def is_sparse_adjacency(edge_index) -> bool:
    """``True`` for a ``torch.sparse`` tensor (any layout) or a ``torch_sparse.SparseTensor``."""
    if isinstance(edge_index, Tensor):
        return edge_index.layout in (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc)
    return isinstance(edge_index, SparseTensor)


def edge_index_and_attr(
    edge_index: Adj, num_nodes: int, edge_attr: Optional[Tensor] = None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """``(edge_index [2, E], edge_attr)`` of a graph given in any form PyG layers accept.

    A ``[2, E]`` tensor is returned as it is. A sparse adjacency ``adj_t`` (``[N, N]``, row =
    target) gives ``edge_index = [col; row]`` (row 0 = source) in its storage order (module
    doc) and, when ``edge_attr`` is ``None``, its values as edge features if they are 2-D.
    An uncoalesced COO tensor is coalesced first (on a GPU that is a host sync: pass a coalesced
    one). The structure is checked (:func:`graphneg.validation.check_adjacency`).
    """
    check_adjacency(edge_index, num_nodes)
    if not is_sparse_adjacency(edge_index):
        return edge_index, edge_attr
    if isinstance(edge_index, SparseTensor):
        row, col, value = edge_index.coo()
    elif edge_index.layout == torch.sparse_coo:
        adj = edge_index if edge_index.is_coalesced() else edge_index.coalesce()
        (row, col), value = adj.indices(), adj.values()
    elif edge_index.layout == torch.sparse_csr:
        col, value = edge_index.col_indices(), edge_index.values()
        # output_size: the number of edges is known, no host sync for repeat_interleave
        row = ptr2index(edge_index.crow_indices(), output_size=col.numel())
    else:  # CSC: column-major
        row, value = edge_index.row_indices(), edge_index.values()
        col = ptr2index(edge_index.ccol_indices(), output_size=row.numel())
    if edge_attr is None and value is not None and value.dim() == 2:
        edge_attr = value
    return torch.stack([col, row]).long(), edge_attr


def sparse_with_values(adj: Adj, value: Tensor) -> Adj:
    """The sparse adjacency ``adj`` with ``value`` (in its storage order) as its values, in the
    same layout (as PyG's ``GATConv`` returns its attention weights for a sparse input). The
    index structure is ``adj``'s own, so the invariants are not checked again."""
    if isinstance(adj, SparseTensor):
        return adj.set_value(value, layout="coo")
    size = tuple(adj.shape[:2]) + tuple(value.shape[1:])
    if adj.layout == torch.sparse_coo:
        adj = adj if adj.is_coalesced() else adj.coalesce()
        return torch.sparse_coo_tensor(adj.indices(), value, size, is_coalesced=True, check_invariants=False)
    if adj.layout == torch.sparse_csr:
        return torch.sparse_csr_tensor(adj.crow_indices(), adj.col_indices(), value, size, check_invariants=False)
    return torch.sparse_csc_tensor(adj.ccol_indices(), adj.row_indices(), value, size, check_invariants=False)


def renamed_argument(kwargs: Dict, old: str, new: str, value, owner: str):
    """Pop the deprecated keyword ``old`` from ``kwargs`` (warning) and return it as ``new``'s value.

    Raises ``TypeError`` when both are given."""
    if old not in kwargs:
        return value
    if value is not None:
        raise TypeError(f"{owner}: pass {new}= only ({old}= is its deprecated name)")
    warnings.warn(f"{owner}({old}=...) is deprecated, use {new}=...", FutureWarning, stacklevel=3)
    return kwargs.pop(old)


def rename_state_dict_keys(module: nn.Module, renames: Dict[str, str]) -> None:
    """Load state dicts saved before sub-modules were renamed: a load pre-hook maps the keys
    ``prefix + old...`` to ``prefix + new...`` (``renames``: old sub-path -> new sub-path, e.g.
    ``{"mlp.0.": "mlp.lin1."}``); keys mapped to ``None`` are dropped (a module that no longer
    exists, e.g. a formerly shared one stored twice). Keys that the module has today are left
    alone, so a custom sub-module with the old names still loads its own state."""

    def hook(mod, state_dict, prefix, *args):
        own = set(mod.state_dict(keep_vars=True))  # current keys are never renamed
        for key in [k for k in state_dict if k.startswith(prefix) and k[len(prefix):] not in own]:
            for old, new in renames.items():
                if key.startswith(prefix + old):
                    value = state_dict.pop(key)
                    if new is not None:
                        state_dict[prefix + new + key[len(prefix + old):]] = value
                    break

    module.register_load_state_dict_pre_hook(hook)


def initialize_lazy(linear: nn.Module, like: Tensor) -> None:
    """Materialise a lazy :class:`torch_geometric.nn.Linear` (``in_channels=-1``) from an input
    ``like`` when its weight is used directly instead of through its forward (whose pre-hook
    would do it)."""
    if isinstance(linear.weight, nn.parameter.UninitializedParameter):
        linear.initialize_parameters(linear, (like,))


__all__ = ["Adj", "is_sparse_adjacency", "edge_index_and_attr", "sparse_with_values", "renamed_argument",
           "rename_state_dict_keys", "initialize_lazy"]
