"""Graph augmentations for graph-level contrastive learning, as PyG transforms.

The four augmentation families of GraphCL (You et al., "Graph Contrastive Learning with
Augmentations", NeurIPS 2020, Sec. 3.1 / Table 1): node dropping, edge perturbation, attribute
masking and subgraph sampling, written as :class:`torch_geometric.transforms.BaseTransform`
subclasses so they compose with :class:`torch_geometric.transforms.Compose` and can be set as a
dataset ``transform``. :class:`TwoViews` turns one graph into the pair of views of GraphCL and
:func:`collate_views` batches pairs into two :class:`~torch_geometric.data.Batch` objects.

Randomness
----------
Each augmentation owns its random stream: pass ``generator`` (a :class:`torch.Generator`) or ``seed``
(an ``int``; a CPU generator is created from it). With neither, the global torch RNG is used.
Two augmentation objects built with the same seed make the same draws; :func:`reseed_augmentations`
gives every augmentation inside a (nested) transform its own seed, and is what a DataLoader
``worker_init_fn`` should call so that workers do not repeat each other's draws.

The transforms act on a single graph (:class:`~torch_geometric.data.Data`, e.g. inside a dataset or
a DataLoader worker) and never modify the input's tensors in place (PyG datasets hand out shallow
copies that share storage with the dataset). The work is vectorised over nodes and edges; the
counts drawn per graph (how many nodes to drop, ...) are Python integers read from tensor shapes.
Random numbers are drawn on the generator's device and moved to the graph's device.

Modules: :mod:`~graphneg.data.graph_augment.base` (:class:`GraphAugmentation`, the random stream),
:mod:`~graphneg.data.graph_augment.nodes` (:class:`NodeDrop`, :class:`SubgraphSample`),
:mod:`~graphneg.data.graph_augment.edges` (:class:`EdgePerturb`),
:mod:`~graphneg.data.graph_augment.attributes` (:class:`AttributeMask`),
:mod:`~graphneg.data.graph_augment.compose` (:class:`Identity`, :class:`RandomChoice`, :class:`TwoViews`,
:func:`collate_views`, :func:`reseed_augmentations`), :mod:`~graphneg.data.graph_augment.by_name`
(:func:`build_augmentation`, :data:`AUGMENTATIONS`); every name is importable from
``graphneg.data.graph_augment``.
"""
from graphneg.data.graph_augment.attributes import AttributeMask
from graphneg.data.graph_augment.base import GraphAugmentation
from graphneg.data.graph_augment.by_name import AUGMENTATIONS, build_augmentation
from graphneg.data.graph_augment.compose import Identity, RandomChoice, TwoViews, collate_views, reseed_augmentations
from graphneg.data.graph_augment.edges import EdgePerturb
from graphneg.data.graph_augment.nodes import NodeDrop, SubgraphSample

__all__ = [
    "GraphAugmentation",
    "NodeDrop",
    "EdgePerturb",
    "AttributeMask",
    "SubgraphSample",
    "RandomChoice",
    "Identity",
    "TwoViews",
    "collate_views",
    "reseed_augmentations",
    "build_augmentation",
    "AUGMENTATIONS",
]
