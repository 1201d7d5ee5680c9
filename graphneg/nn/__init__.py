"""GCA-HNG as PyG message passing: layers reusable on any ``(x, edge_index, edge_attr)`` graph,
the :class:`GCAGNN` network and the :class:`GCAHNG` hard-negative generator (its generation step as
functions in :mod:`graphneg.nn.generation`). GCA-HNG's losses and its training objective live one floor
up, in :mod:`graphneg.losses.gca_hng`.

Edge convention (PyG ``source_to_target``): ``edge_index[0]`` is the source ``j``,
``edge_index[1]`` the target ``i``. The official GCA-HNG edge ``(r, c)`` (row ``r``, column ``c``
of its dense ``[B, B, D]`` tensor) is the PyG edge ``(source=r, target=c)``.

As PyG layers, every layer takes ``in_channels`` / ``out_channels`` (``-1``: lazy), has
``reset_parameters()``, and accepts ``edge_index`` as a ``[2, E]`` tensor, a ``torch.sparse``
adjacency or a ``torch_sparse.SparseTensor`` (``adj_t``, row = target); per-edge tensors then
follow the adjacency's storage order (:mod:`graphneg.nn.inputs`). Every layer compiles with
``torch.compile(fullgraph=True)``.
"""
from graphneg.nn.correlation import CorrelationEdgeEncoder
from graphneg.nn.edge_to_node import EdgeToNodeConv
from graphneg.nn.gca_block import GCABlock, attention_mask_from_labels
from graphneg.nn.gca_gnn import GCAGNN, GCAGNNOutput
from graphneg.nn.generation import chain_weights, dirichlet_weights, hdml_interpolate
from graphneg.nn.generator import GCAHNG
from graphneg.nn.negatives import GeneratedNegatives, NegativePairs
from graphneg.nn.node_attention import NodeAttentionConv, softmax_with_zero_logit
from graphneg.nn.node_to_edge import NodeToEdgeConv

__all__ = [
    "CorrelationEdgeEncoder", "NodeAttentionConv", "EdgeToNodeConv", "NodeToEdgeConv", "GCABlock",
    "GCAGNN", "GCAGNNOutput", "GCAHNG", "GeneratedNegatives", "NegativePairs",
    "attention_mask_from_labels", "softmax_with_zero_logit", "hdml_interpolate", "chain_weights",
    "dirichlet_weights",
]
