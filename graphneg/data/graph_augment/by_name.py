"""GraphCL's augmentations by name: :func:`build_augmentation` turns a name of :data:`AUGMENTATIONS` (or one
of GraphCL's own option names) into the transform, with GraphCL's ``aug_ratio`` convention
(:class:`graphneg.data.tu.TUDataModule`'s ``augment`` / ``augment2`` arguments)."""
from __future__ import annotations

from typing import Callable, Union

from graphneg.data.graph_augment.attributes import AttributeMask
from graphneg.data.graph_augment.compose import Identity, RandomChoice
from graphneg.data.graph_augment.edges import EdgePerturb
from graphneg.data.graph_augment.nodes import NodeDrop, SubgraphSample

__all__ = ["AUGMENTATIONS", "build_augmentation"]

#: Augmentation names of :func:`build_augmentation` (GraphCL's names are accepted as aliases).
AUGMENTATIONS = ("none", "node_drop", "edge_perturb", "attr_mask", "subgraph",
                 "random2", "random3", "random4")
_ALIASES = {"dnodes": "node_drop", "pedges": "edge_perturb", "mask_nodes": "attr_mask",
            "identity": "none"}


def build_augmentation(spec: Union[str, Callable, None], aug_ratio: float = 0.2,
                       attr_mask_fill: str = "zero") -> Callable:
    """One GraphCL augmentation from its name (a callable is returned unchanged).

    Ratios follow GraphCL's ``aug_ratio`` convention (official ``semisupervised_TU`` code): node
    dropping removes, edge perturbation perturbs and attribute masking masks ``aug_ratio`` of the
    nodes / edges, while subgraph sampling *keeps* ``1 - aug_ratio`` of the nodes. ``random2``:
    node dropping or subgraph; ``random3``: + edge perturbation; ``random4``: + attribute masking
    (a uniform choice per graph, as GraphCL's ``random2/3/4``). Seeds are set afterwards by
    :func:`~graphneg.data.graph_augment.reseed_augmentations`.
    """
    if spec is None:
        return Identity()
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"augment must be a name in {AUGMENTATIONS} or a callable, got {spec!r}")
    key = _ALIASES.get(spec.lower(), spec.lower())
    if key not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {spec!r}; choose one of {AUGMENTATIONS}")
    r = float(aug_ratio)
    if not 0.0 <= r < 1.0:
        raise ValueError(f"aug_ratio must lie in [0, 1), got {aug_ratio}")
    make = {
        "node_drop": lambda: NodeDrop(r),
        "edge_perturb": lambda: EdgePerturb(r),
        "attr_mask": lambda: AttributeMask(r, fill=attr_mask_fill),
        "subgraph": lambda: SubgraphSample(1.0 - r),
    }
    if key == "none":
        return Identity()
    if key in make:
        return make[key]()
    names = {"random2": ("node_drop", "subgraph"),
             "random3": ("node_drop", "edge_perturb", "subgraph"),
             "random4": ("node_drop", "edge_perturb", "subgraph", "attr_mask")}[key]
    return RandomChoice([make[n]() for n in names])
