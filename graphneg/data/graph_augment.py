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
"""
from __future__ import annotations

import copy
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.transforms import BaseTransform, Compose
from torch_geometric.utils import is_undirected

from graphneg.validation import check_hyperparameter, check_single_graph

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
]


class GraphAugmentation(BaseTransform):
    """Base class: owns the random stream (``generator`` or ``seed``) of an augmentation."""

    def __init__(self, generator: Optional[torch.Generator] = None, seed: Optional[int] = None):
        if generator is not None and seed is not None:
            raise ValueError("pass either generator or seed, not both")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.seed = seed
        self.generator = generator
        if seed is not None:
            self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream from ``seed`` (keeps the generator's device)."""
        device = self.generator.device if self.generator is not None else "cpu"
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed))
        self.seed = int(seed)

    # random helpers: drawn on the generator's device, returned on ``device``
    def _gen_device(self, device: torch.device) -> torch.device:
        return self.generator.device if self.generator is not None else device

    def _randperm(self, n: int, device: torch.device) -> Tensor:
        out = torch.randperm(n, generator=self.generator, device=self._gen_device(device))
        return out.to(device)

    def _randint(self, low: int, high: int, size: Tuple[int, ...], device: torch.device) -> Tensor:
        out = torch.randint(low, high, size, generator=self.generator, device=self._gen_device(device))
        return out.to(device)

    def _rand(self, size: Tuple[int, ...], device: torch.device) -> Tensor:
        return torch.rand(size, generator=self.generator, device=self._gen_device(device)).to(device)

    def _randn(self, size: Tuple[int, ...], device: torch.device) -> Tensor:
        return torch.randn(size, generator=self.generator, device=self._gen_device(device)).to(device)


def _subgraph_keep(data: Data, keep: Tensor) -> Data:
    """Induced subgraph on the boolean node mask ``keep`` (nodes relabelled, order preserved).

    Node- and edge-level attributes (``x``, ``edge_attr``, ...) follow the kept nodes / edges via
    :meth:`torch_geometric.data.Data.subgraph`; a graph-level ``y`` (first dimension different
    from the node count) is kept unchanged.
    """
    y = data.y if "y" in data else None
    graph_level_y = isinstance(y, Tensor) and (y.dim() == 0 or y.size(0) != data.num_nodes)
    if graph_level_y:
        del data.y
    out = data.subgraph(keep)
    if graph_level_y:
        out.y = y
        data.y = y
    return out


class NodeDrop(GraphAugmentation):
    r"""Drop a fraction ``p`` of the nodes and their edges (GraphCL "node dropping").

    Source: GraphCL (You et al., NeurIPS 2020) Sec. 3.1, and the official code
    (Shen-Lab/GraphCL, ``semisupervised_TU/pre-training/tu_dataset.py`` ``drop_nodes``):
    ``floor(p * N)`` nodes drawn uniformly without replacement are removed with every edge touching
    them; the others are relabelled in their original order. At least one node is always kept
    (the count is capped at ``N - 1``).

    Args:
        p (float): fraction of nodes to drop, in ``[0, 1]`` (GraphCL's default ``aug_ratio`` 0.2).
        generator (torch.Generator, optional): random stream.
        seed (int, optional): seed of a new CPU generator (instead of ``generator``).

    Shapes:
        input ``Data(x=[N, F], edge_index=[2, E], edge_attr=[E, *])`` ->
        ``Data(x=[N - floor(p N), F], edge_index=[2, E'], edge_attr=[E', *])``.
    """

    def __init__(self, p: float = 0.2, generator: Optional[torch.Generator] = None,
                 seed: Optional[int] = None):
        super().__init__(generator, seed)
        self.p = check_hyperparameter(p, "p", 0.0, 1.0, owner="NodeDrop")

    def forward(self, data: Data) -> Data:
        check_single_graph(data, "NodeDrop")
        n = data.num_nodes
        device = data.edge_index.device
        num_drop = min(int(self.p * n), n - 1)
        if num_drop == 0:
            return data
        drop = self._randperm(n, device)[:num_drop]
        keep = torch.ones(n, dtype=torch.bool, device=device)
        keep[drop] = False
        return _subgraph_keep(data, keep)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p})"


class EdgePerturb(GraphAugmentation):
    r"""Remove a fraction ``p`` of the edges and add as many random new ones (GraphCL "edge
    perturbation").

    Source: GraphCL (You et al., NeurIPS 2020) Sec. 3.1 ("randomly adding or dropping a certain
    ratio of edges") and the official code (Shen-Lab/GraphCL,
    ``semisupervised_TU/pre-training/tu_dataset.py`` ``permute_edges``: drop ``floor(p E)`` edges,
    add ``floor(p E)`` uniformly random node pairs).

    Differences from the official code (documented choices):

    * undirected graphs stay undirected: when the input is undirected (``is_undirected`` with its
      ``edge_attr``), the ``E_u`` undirected edges (pairs ``i <= j``) are perturbed and mirrored back,
      so ``floor(p E_u)`` undirected edges are removed and up to as many added;
    * added edges join two distinct nodes (no self-loops) and duplicates of kept edges or of each
      other are discarded, so the edge count can end slightly below the input's;
    * edge-level attributes (``edge_attr``, ``edge_weight``, ...) of kept edges are kept; added edges
      get zeros (``fill_value``); the output is sorted by (source, target).

    Args:
        p (float): fraction of edges to perturb, in ``[0, 1]``.
        fill_value (float): value of the edge-level attributes of added edges (default ``0``).
        generator (torch.Generator, optional), seed (int, optional): random stream.

    Shapes:
        ``edge_index=[2, E]`` -> ``[2, E']`` with ``E' <= E``; node attributes unchanged.
    """

    def __init__(self, p: float = 0.2, fill_value: float = 0.0,
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None):
        super().__init__(generator, seed)
        self.p = check_hyperparameter(p, "p", 0.0, 1.0, owner="EdgePerturb")
        self.fill_value = float(fill_value)

    def forward(self, data: Data) -> Data:
        check_single_graph(data, "EdgePerturb")
        n = data.num_nodes
        edge_index = data.edge_index
        device = edge_index.device
        edge_keys = [k for k in data.edge_attrs() if k != "edge_index"]
        undirected = is_undirected(edge_index, data.edge_attr if "edge_attr" in data else None,
                                   num_nodes=n)
        row, col = edge_index
        if undirected:
            cand = (row <= col).nonzero().view(-1)  # one entry per undirected edge (self-loops once)
        else:
            cand = torch.arange(row.numel(), device=device)
        m = cand.numel()
        k = int(self.p * m)
        if k == 0:
            return data
        kept = cand[self._randperm(m, device)[k:]].sort().values
        r_keep, c_keep = row[kept], col[kept]

        # k random pairs of distinct nodes (none when the graph has a single node)
        if n > 1:
            i = self._randint(0, n, (k,), device)
            j = (i + self._randint(1, n, (k,), device)) % n
            if undirected:
                i, j = torch.minimum(i, j), torch.maximum(i, j)
            new_key = torch.unique(i * n + j)
            new_key = new_key[~torch.isin(new_key, r_keep * n + c_keep)]
            r_new, c_new = new_key // n, new_key % n
        else:
            r_new = c_new = row.new_empty(0)
        num_new = r_new.numel()

        r_all = torch.cat([r_keep, r_new])
        c_all = torch.cat([c_keep, c_new])
        attrs = {}
        for key in edge_keys:
            value = data[key]
            fill = value.new_full((num_new,) + tuple(value.shape[1:]), self.fill_value)
            attrs[key] = torch.cat([value[kept], fill], dim=0)
        if undirected:  # mirror every non-loop edge
            off = r_all != c_all
            r_all, c_all = torch.cat([r_all, c_all[off]]), torch.cat([c_all, r_all[off]])
            attrs = {key: torch.cat([v, v[off]], dim=0) for key, v in attrs.items()}
        order = torch.argsort(r_all * n + c_all)
        data.edge_index = torch.stack([r_all[order], c_all[order]], dim=0)
        for key, value in attrs.items():
            data[key] = value[order]
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p})"


class AttributeMask(GraphAugmentation):
    r"""Mask the features of a fraction ``p`` of the nodes (GraphCL "attribute masking").

    Source: GraphCL (You et al., NeurIPS 2020) Sec. 3.1: "attribute masking prompts models to recover
    masked vertex attributes using their context information". The paper does not fix the mask
    value and the official code uses several:

    * ``fill="zero"`` (default): the masked rows become zeros (the mask token of GraphCL's
      ``transferLearning_MoleculeNet`` code and of most re-implementations);
    * ``fill="mean"``: the mean feature row of the graph (official
      ``semisupervised_TU/pre-training/tu_dataset.py`` ``mask_nodes``);
    * ``fill="gaussian"``: i.i.d. ``N(0.5, 0.5^2)`` entries (official ``unsupervised_TU/aug.py``
      ``mask_nodes``, the setting of GraphCL's unsupervised TU experiments).

    ``mode="node"`` (default, GraphCL) masks ``floor(p N)`` whole feature rows drawn without
    replacement; ``mode="feature"`` instead zeroes ``floor(p F)`` feature channels for every node
    (the feature masking of GRACE, Zhu et al. 2020, Sec. 3.2; ``fill`` must be ``"zero"`` there).
    The input ``x`` is never modified in place.

    Args:
        p (float): fraction of rows (or channels) to mask, in ``[0, 1]``.
        mode (str): ``"node"`` or ``"feature"``.
        fill (str): ``"zero"``, ``"mean"`` or ``"gaussian"``.
        generator (torch.Generator, optional), seed (int, optional): random stream.

    Shapes:
        ``x=[N, F]`` -> ``x=[N, F]``; the graph structure is unchanged.
    """

    MODES = ("node", "feature")
    FILLS = ("zero", "mean", "gaussian")

    def __init__(self, p: float = 0.2, mode: str = "node", fill: str = "zero",
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None):
        super().__init__(generator, seed)
        self.p = check_hyperparameter(p, "p", 0.0, 1.0, owner="AttributeMask")
        if mode not in self.MODES:
            raise ValueError(f"AttributeMask mode must be one of {self.MODES}, got {mode!r}")
        if fill not in self.FILLS:
            raise ValueError(f"AttributeMask fill must be one of {self.FILLS}, got {fill!r}")
        if mode == "feature" and fill != "zero":
            raise ValueError("AttributeMask(mode='feature') zeroes channels: use fill='zero'")
        self.mode, self.fill = mode, fill

    def forward(self, data: Data) -> Data:
        check_single_graph(data, "AttributeMask")
        x = data.x
        if x is None:
            raise ValueError(
                "AttributeMask needs node features data.x; add them first, e.g. "
                "torch_geometric.transforms.OneHotDegree(max_degree) for graphs without attributes"
            )
        if x.dim() != 2:
            raise ValueError(f"AttributeMask expects data.x of shape [N, F], got {tuple(x.shape)}")
        n, f = x.shape
        device = x.device
        if self.mode == "feature":
            k = int(self.p * f)
            if k == 0:
                return data
            cols = self._randperm(f, device)[:k]
            keep = torch.ones(f, dtype=x.dtype, device=device)
            keep[cols] = 0
            data.x = x * keep
            return data
        k = int(self.p * n)
        if k == 0:
            return data
        rows = self._randperm(n, device)[:k]
        out = x.clone()
        if self.fill == "zero":
            out[rows] = 0
        elif self.fill == "mean":
            out[rows] = x.float().mean(dim=0).to(x.dtype)
        else:
            out[rows] = (0.5 + 0.5 * self._randn((k, f), device)).to(x.dtype)
        data.x = out
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p}, mode={self.mode!r}, fill={self.fill!r})"


class SubgraphSample(GraphAugmentation):
    r"""Keep a connected-as-possible subgraph of ``ratio * N`` nodes grown from a random node
    (GraphCL "subgraph").

    Source: GraphCL (You et al., NeurIPS 2020) Sec. 3.1 (subgraph sampled by random walk) and the
    official code (Shen-Lab/GraphCL ``unsupervised_TU`` ``subgraph``): start from a uniformly random
    node and repeatedly add random nodes of the current neighbourhood until ``floor(ratio N)`` nodes
    are selected; when the neighbourhood is exhausted (the component is smaller than the target),
    jump to a random unselected node, as the later official versions do.

    Vectorised form (one loop iteration per BFS hop, not per node): at each hop the frontier (the
    unselected neighbours of the selection, edges taken in both directions) is added whole if it
    fits, otherwise a uniformly random subset of the missing size is added. The result is the
    induced subgraph, nodes in their original order. At least one node is kept.

    Args:
        ratio (float): fraction of nodes kept, in ``(0, 1]`` (GraphCL keeps ``1 - aug_ratio``).
        generator (torch.Generator, optional), seed (int, optional): random stream.

    Shapes:
        ``x=[N, F]`` -> ``x=[max(1, floor(ratio N)), F]``, ``edge_index`` induced.
    """

    def __init__(self, ratio: float = 0.8, generator: Optional[torch.Generator] = None,
                 seed: Optional[int] = None):
        super().__init__(generator, seed)
        self.ratio = check_hyperparameter(ratio, "ratio", 0.0, 1.0, min_inclusive=False, owner="SubgraphSample")

    def forward(self, data: Data) -> Data:
        check_single_graph(data, "SubgraphSample")
        n = data.num_nodes
        device = data.edge_index.device
        target = max(1, int(self.ratio * n))
        if target >= n:
            return data
        row, col = data.edge_index
        selected = torch.zeros(n, dtype=torch.bool, device=device)
        selected[self._randint(0, n, (1,), device)] = True
        count = 1
        while count < target:
            frontier = torch.zeros(n, dtype=torch.bool, device=device)
            frontier[col[selected[row]]] = True
            frontier[row[selected[col]]] = True
            frontier &= ~selected
            cand = frontier.nonzero().view(-1)
            if cand.numel() == 0:  # component exhausted: restart from a random unselected node
                cand = (~selected).nonzero().view(-1)
                cand = cand[self._randint(0, cand.numel(), (1,), device)]
            need = target - count
            if cand.numel() > need:
                cand = cand[self._randperm(cand.numel(), device)[:need]]
            selected[cand] = True
            count += cand.numel()
        return _subgraph_keep(data, selected)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(ratio={self.ratio})"


class Identity(BaseTransform):
    """No augmentation (GraphCL's ``none``): returns the graph unchanged."""

    def forward(self, data: Data) -> Data:
        return data


class RandomChoice(GraphAugmentation):
    r"""Apply one augmentation drawn at random per call (GraphCL's ``random2/3/4`` options).

    Source: GraphCL official code (``unsupervised_TU/aug.py``: ``random4`` draws uniformly among
    node dropping, edge perturbation, subgraph and attribute masking for every graph).

    Args:
        transforms (list of callables): the candidates.
        probs (list of float, optional): their probabilities (uniform by default).
        generator (torch.Generator, optional), seed (int, optional): random stream of the choice
            (each candidate keeps its own stream).
    """

    def __init__(self, transforms: Sequence[Callable], probs: Optional[Sequence[float]] = None,
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None):
        super().__init__(generator, seed)
        transforms = list(transforms)
        if len(transforms) == 0:
            raise ValueError("RandomChoice needs at least one transform")
        if probs is None:
            probs = [1.0 / len(transforms)] * len(transforms)
        probs = torch.as_tensor(list(probs), dtype=torch.float64)
        if probs.numel() != len(transforms) or bool((probs < 0).any()) or float(probs.sum()) <= 0:
            raise ValueError(
                f"RandomChoice probs must be {len(transforms)} non-negative numbers with a positive "
                f"sum, got {probs.tolist()}"
            )
        self.transforms = transforms
        self.probs = probs / probs.sum()

    def forward(self, data: Data) -> Data:
        idx = int(torch.multinomial(self.probs.float(), 1, generator=self.generator))
        return self.transforms[idx](data)

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"{self.__class__.__name__}([{inner}], probs={[round(p, 4) for p in self.probs.tolist()]})"


class TwoViews(BaseTransform):
    r"""Return two independently augmented views ``(aug1(data), aug2(data))`` of one graph.

    GraphCL (You et al., NeurIPS 2020) Eq. (1)-(3): two augmentations ``t_i, t_j`` are applied to the
    same graph and the two views form the positive pair. ``aug2=None`` reuses ``aug1`` (its random
    stream advances between the two calls, so the views differ). Each view is built from its own
    shallow copy of the input, so one view never sees the other's changes. Pair with
    :func:`collate_views` in a DataLoader.
    """

    def __init__(self, aug1: Callable, aug2: Optional[Callable] = None):
        if not callable(aug1) or (aug2 is not None and not callable(aug2)):
            raise ValueError("TwoViews needs callable augmentations (PyG transforms)")
        self.aug1 = aug1
        self.aug2 = aug2 if aug2 is not None else aug1

    def forward(self, data: Data) -> Tuple[Data, Data]:
        return self.aug1(copy.copy(data)), self.aug2(copy.copy(data))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.aug1!r}, {self.aug2!r})"


def collate_views(pairs: Sequence[Tuple[Data, Data]]) -> Tuple[Batch, Batch]:
    """DataLoader ``collate_fn`` for :class:`TwoViews` items: ``[(a_1, b_1), ...]`` ->
    ``(Batch(a_1, ...), Batch(b_1, ...))``; graph ``g`` of both batches comes from the same item."""
    pairs = list(pairs)
    if len(pairs) == 0:
        raise ValueError("collate_views got an empty list of pairs")
    if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
        raise ValueError(
            "collate_views expects (view1, view2) pairs: set TwoViews(aug1, aug2) as the dataset transform"
        )
    first = Batch.from_data_list([p[0] for p in pairs])
    second = Batch.from_data_list([p[1] for p in pairs])
    return first, second


def _iter_augmentations(transform) -> List[GraphAugmentation]:
    """All :class:`GraphAugmentation` objects inside ``transform`` (Compose, RandomChoice, TwoViews),
    each once, in depth-first order."""
    found: List[GraphAugmentation] = []
    seen = set()

    def visit(t):
        if t is None or id(t) in seen:
            return
        seen.add(id(t))
        if isinstance(t, GraphAugmentation):
            found.append(t)
        if isinstance(t, (Compose, RandomChoice)):
            for sub in t.transforms:
                visit(sub)
        if isinstance(t, TwoViews):
            visit(t.aug1)
            visit(t.aug2)

    visit(transform)
    return found


def reseed_augmentations(transform, seed: int) -> int:
    """Give every augmentation inside ``transform`` its own seed ``seed + 0, seed + 1, ...``
    (depth-first order) and return how many were reseeded.

    Use in a DataLoader ``worker_init_fn`` with the worker's seed, so workers draw different
    augmentations, reproducibly for a seeded DataLoader ``generator``.
    """
    augs = _iter_augmentations(transform)
    for k, aug in enumerate(augs):
        aug.reseed(int(seed) + k)
    return len(augs)
