"""TU graph-classification datasets from a local folder, as a LightningDataModule for graph
contrastive learning (GraphCL-style augmented pairs for training; the plain graphs for the SVC
protocol of InfoGraph / HCL).

Layout (the raw TU zip, https://chrsmrrs.github.io/datasets/)::

    <root>/<NAME>/raw/<NAME>_A.txt
    <root>/<NAME>/raw/<NAME>_graph_indicator.txt
    <root>/<NAME>/raw/<NAME>_graph_labels.txt
    <root>/<NAME>/raw/<NAME>_node_labels.txt        (optional)
    <root>/<NAME>/raw/<NAME>_node_attributes.txt    (optional)
    <root>/<NAME>/raw/<NAME>_edge_labels.txt        (optional)
    <root>/<NAME>/raw/<NAME>_edge_attributes.txt    (optional)

Nothing is downloaded. Two real datasets ship inside the ``grakel`` wheel
(``grakel/tests/data/MUTAG`` and ``grakel/tests/data/Cuneiform``); :func:`prepare_grakel_tu`
copies them into that layout, and :class:`TUDataModule` does so by itself for those names.

Data safety: files already in ``raw/`` are never overwritten (only missing files are copied, and
never next to a file that differs from grakel's copy); the raw files are checked
(:func:`check_tu_files`: node ids in range, every edge inside one graph, line counts that agree,
each error naming the file and line) before PyG processes them; the processed cache lives in
``<root>/<NAME>/processed/<fingerprint>/``, keyed on the raw files' content, so editing a raw file
makes the next load re-process it instead of reading a stale cache.
"""
from __future__ import annotations

import copy
import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import numpy as np

import torch
from torch import Tensor
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import get_worker_info

import lightning as L
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.datasets import TUDataset
from torch_geometric.loader import DataLoader as PyGDataLoader
from torch_geometric.transforms import BaseTransform, Compose, OneHotDegree
from torch_geometric.utils import degree

from graphneg.data.graph_augment import (
    AttributeMask,
    EdgePerturb,
    Identity,
    NodeDrop,
    RandomChoice,
    SubgraphSample,
    TwoViews,
    collate_views,
    reseed_augmentations,
)

__all__ = ["GRAKEL_TU_DATASETS", "AUGMENTATIONS", "prepare_grakel_tu", "check_tu_files",
           "tu_fingerprint", "build_augmentation", "CappedOneHotDegree", "StandardizeNodeAttributes",
           "TUDataModule"]

#: TU datasets shipped by the grakel wheel (``grakel/tests/data/<NAME>``).
GRAKEL_TU_DATASETS = ("MUTAG", "Cuneiform")

#: Augmentation names of :func:`build_augmentation` (GraphCL's names are accepted as aliases).
AUGMENTATIONS = ("none", "node_drop", "edge_perturb", "attr_mask", "subgraph",
                 "random2", "random3", "random4")
_ALIASES = {"dnodes": "node_drop", "pedges": "edge_perturb", "mask_nodes": "attr_mask",
            "identity": "none"}

_REQUIRED = ("A", "graph_indicator", "graph_labels")
_OPTIONAL = ("node_labels", "node_attributes", "edge_labels", "edge_attributes", "graph_attributes")


def _canonical_grakel_name(name: str) -> Optional[str]:
    for known in GRAKEL_TU_DATASETS:
        if name.lower() == known.lower():
            return known
    return None


def _layout_message(name: str, root: Union[str, Path]) -> str:
    raw = Path(root) / name / "raw"
    req = ", ".join(f"{name}_{s}.txt" for s in _REQUIRED)
    opt = ", ".join(f"{name}_{s}.txt" for s in _OPTIONAL)
    return (
        f"TU dataset {name!r} not found: expected the raw TU files in {raw}/ : {req} "
        f"(optional: {opt}). Unzip the dataset from https://chrsmrrs.github.io/datasets/ so that "
        f"{raw / (name + '_A.txt')} exists; nothing is downloaded. Offline copies of "
        f"{' and '.join(GRAKEL_TU_DATASETS)} come with grakel: graphneg.data.tu.prepare_grakel_tu(name, root)."
    )


def prepare_grakel_tu(name: str, root: Union[str, Path] = "datasets/tu") -> Path:
    """Copy a TU dataset shipped by the installed ``grakel`` wheel into ``<root>/<NAME>/raw/``.

    ``grakel`` ships the real TU files of MUTAG (188 graphs, 2 classes) and Cuneiform (267 graphs,
    30 classes) under ``grakel/tests/data/<NAME>/``; copied into the raw layout,
    ``torch_geometric.datasets.TUDataset(root, NAME)`` loads them without network access.
    Returns the raw folder.

    A file already in the raw folder is **never overwritten**: only missing files are copied
    (each written to a temporary name first, then renamed, so an interrupted copy leaves no
    half-written file). If a file present there differs from grakel's copy (your own edit or
    another version) and some other file is missing, nothing is copied and ``ValueError`` says
    which files differ and which are missing: mixing the two versions would give an inconsistent
    dataset.

    Raises:
        ValueError: ``name`` is not one of :data:`GRAKEL_TU_DATASETS`, or the raw folder holds
            files that differ from grakel's copy while others are missing.
        ModuleNotFoundError: grakel is not installed.
        FileNotFoundError: the installed grakel has no ``tests/data/<NAME>`` folder.
    """
    canonical = _canonical_grakel_name(str(name))
    if canonical is None:
        raise ValueError(
            f"grakel ships only {GRAKEL_TU_DATASETS} as TU files, got {name!r}; place other datasets "
            f"by hand: {_layout_message(str(name), root)}"
        )
    import importlib.util

    spec = importlib.util.find_spec("grakel")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "prepare_grakel_tu needs the grakel package (its wheel ships the MUTAG and Cuneiform TU "
            "files): pip install grakel, or install graphneg with the 'demo' extra "
            "(pip install 'graphneg[demo]')"
        )
    src = Path(list(spec.submodule_search_locations)[0]) / "tests" / "data" / canonical
    files = sorted(src.glob(f"{canonical}_*.txt")) if src.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"the installed grakel has no TU files for {canonical} under {src}; reinstall grakel "
            "(pip install --force-reinstall grakel) or place the files by hand: "
            + _layout_message(canonical, root)
        )
    raw = Path(root) / canonical / "raw"
    missing = [f for f in files if not (raw / f.name).exists()]
    if not missing:
        return raw
    differing = [f.name for f in files
                 if (raw / f.name).exists() and (raw / f.name).read_bytes() != f.read_bytes()]
    if differing:
        raise ValueError(
            f"{raw} holds files that differ from the copy in the grakel wheel ({', '.join(differing)}: "
            f"your own edit or another version) but lacks {', '.join(f.name for f in missing)}. "
            "graphneg never overwrites your files and does not mix them with grakel's: put the missing "
            f"files into {raw} yourself, or move the folder away to get grakel's complete copy"
        )
    raw.mkdir(parents=True, exist_ok=True)
    for f in missing:
        dst = raw / f.name
        tmp = raw / f".{f.name}.{os.getpid()}.tmp"
        tmp.write_bytes(f.read_bytes())
        if dst.exists():  # appeared meanwhile (another process): keep it
            tmp.unlink()
        else:
            os.replace(tmp, dst)
    return raw


def tu_fingerprint(name: str, root: Union[str, Path] = "datasets/tu") -> str:
    """SHA-256 (first 16 hex digits) of the names and bytes of ``<root>/<name>/raw/<name>_*.txt``.

    The processed cache of :class:`TUDataModule` is stored under ``processed/<fingerprint>``, so a
    change to any raw file selects a new cache and the data are processed again.
    """
    raw = Path(root) / name / "raw"
    h = hashlib.sha256()
    for path in sorted(raw.glob(f"{name}_*.txt")):
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _read_tu_table(path: Path, kind: type, what: str) -> np.ndarray:
    """Rows of comma-separated numbers of one TU file as a 2-D array, errors naming file and line.

    Mirrors PyG's reader (``torch_geometric.io.read_txt_array``: ``text.split("\\n")[:-1]``,
    ``int`` / ``float`` per comma-separated field), so what passes here parses there.
    """
    text = path.read_text()
    if text and not text.endswith("\n"):
        raise ValueError(
            f"{path}: the file does not end with a newline; PyG's TU reader would silently drop its last "
            "line. Add a newline at the end of the file"
        )
    lines = text.split("\n")[:-1]
    rows: List[List] = []
    width = None
    for i, line in enumerate(lines, start=1):  # once per cache miss, as PyG's own reader
        try:
            row = [kind(v) for v in line.split(",")]
        except ValueError:
            raise ValueError(
                f"{path}, line {i}: {line!r} is not {what} (comma-separated "
                f"{'integers' if kind is int else 'numbers'})"
            ) from None
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise ValueError(f"{path}, line {i}: {len(row)} values, but line 1 has {width}")
        rows.append(row)
    dtype = np.int64 if kind is int else np.float64
    return np.asarray(rows, dtype=dtype).reshape(len(rows), width or 0)


def check_tu_files(name: str, root: Union[str, Path] = "datasets/tu") -> Dict[str, int]:
    """Check the raw TU files of ``<root>/<name>/raw`` before they are processed.

    * ``_graph_indicator.txt``: one graph id per node, ids ``1..G`` in non-decreasing order with
      no graph left empty (PyG slices the nodes of graph ``g`` as one contiguous block);
    * ``_A.txt``: two node ids ``i, j`` per line, each in ``1..N`` (``N`` = lines of the indicator)
      and both nodes in the same graph (PyG would otherwise shift the edge into a wrong node);
    * ``_graph_labels.txt`` / ``_graph_attributes.txt``: ``G`` lines; node labels / attributes:
      ``N`` lines; edge labels / attributes: one line per line of ``_A.txt``.

    Every error is a ``ValueError`` naming the file and, for a bad entry, the line.
    Returns ``{"num_nodes": N, "num_edges": E, "num_graphs": G}``.
    """
    raw = Path(root) / name / "raw"
    path = {s: raw / f"{name}_{s}.txt" for s in _REQUIRED + _OPTIONAL}
    for s in _REQUIRED:
        if not path[s].is_file():
            raise FileNotFoundError(_layout_message(name, root))
    ind_path = path["graph_indicator"]
    ind = _read_tu_table(ind_path, int, "a graph id")
    if ind.shape[1] != 1:
        raise ValueError(f"{ind_path}, line 1: expected one graph id per line, got {ind.shape[1]} values")
    ind = ind[:, 0]
    n = ind.size
    if n == 0:
        raise ValueError(f"{ind_path} is empty: expected one graph id (1-based) per node")
    bad = np.flatnonzero(ind < 1)
    if bad.size:
        raise ValueError(f"{ind_path}, line {bad[0] + 1}: graph id {ind[bad[0]]} < 1 (TU graph ids start at 1)")
    bad = np.flatnonzero(np.diff(ind) < 0)
    if bad.size:
        i = bad[0] + 1
        raise ValueError(
            f"{ind_path}, line {i + 1}: graph id {ind[i]} after {ind[i - 1]}; the nodes of each graph "
            "must be listed together in increasing graph order"
        )
    g = int(ind[-1])
    present = np.zeros(g + 1, dtype=bool)
    present[ind] = True
    empty = np.flatnonzero(~present[1:])
    if empty.size:
        raise ValueError(f"{ind_path}: graph {empty[0] + 1} has no node (ids must run 1..{g} without gaps)")

    a_path = path["A"]
    edges = _read_tu_table(a_path, int, "an edge 'i, j'")
    if edges.shape[0] and edges.shape[1] != 2:
        raise ValueError(f"{a_path}, line 1: expected two node ids 'i, j' per line, got {edges.shape[1]} values")
    edges = edges.reshape(-1, 2)
    out = np.flatnonzero(((edges < 1) | (edges > n)).any(axis=1))
    if out.size:
        i = out[0]
        raise ValueError(
            f"{a_path}, line {i + 1}: edge {edges[i, 0]}, {edges[i, 1]} names a node outside 1..{n} "
            f"(node ids are 1-based lines of {ind_path.name}, which has {n} lines)"
        )
    gs, gt = ind[edges[:, 0] - 1], ind[edges[:, 1] - 1]
    cross = np.flatnonzero(gs != gt)
    if cross.size:
        i = cross[0]
        raise ValueError(
            f"{a_path}, line {i + 1}: edge {edges[i, 0]}, {edges[i, 1]} joins node {edges[i, 0]} of graph "
            f"{gs[i]} and node {edges[i, 1]} of graph {gt[i]}; an edge must stay inside one graph "
            f"({ind_path.name})"
        )
    e = edges.shape[0]
    expected = {"graph_labels": (g, "graphs"), "graph_attributes": (g, "graphs"),
                "node_labels": (n, "nodes"), "node_attributes": (n, "nodes"),
                "edge_labels": (e, "edges"), "edge_attributes": (e, "edges")}
    for s, (count, unit) in expected.items():
        if not path[s].is_file():
            continue
        kind = float if s.endswith("attributes") else int
        rows = _read_tu_table(path[s], kind, "a label" if kind is int else "an attribute vector").shape[0]
        if rows != count:
            raise ValueError(
                f"{path[s]}: {rows} lines, but the dataset has {count} {unit} (one line per "
                f"{unit[:-1]}: {ind_path.name} lists {n} nodes in {g} graphs, {a_path.name} {e} edges)"
            )
    return {"num_nodes": n, "num_edges": e, "num_graphs": g}


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


class CappedOneHotDegree(BaseTransform):
    r"""One-hot node degree with degrees above ``max_degree`` clamped to ``max_degree``.

    Reconstructed: InfoGraph / HCL (``graph/deepinfomax.py``) use
    :class:`~torch_geometric.transforms.OneHotDegree` when the largest degree is below 1000 and a
    normalised scalar degree above; here large-degree datasets keep a one-hot code of
    ``min(deg, max_degree)`` (``max_degree + 1`` channels), which bounds the width.
    Replaces ``x``. Shapes: ``x=[N, max_degree + 1]``.
    """

    def __init__(self, max_degree: int):
        self.max_degree = int(max_degree)

    def forward(self, data: Data) -> Data:
        deg = degree(data.edge_index[0], data.num_nodes, dtype=torch.long)
        deg = deg.clamp(max=self.max_degree)
        data.x = torch.nn.functional.one_hot(deg, self.max_degree + 1).to(torch.float)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.max_degree})"


class StandardizeNodeAttributes(BaseTransform):
    r"""Z-score the first ``num_attributes`` columns of ``x`` (the continuous TU node attributes).

    .. math:: x_{i,f} \leftarrow (x_{i,f} - \mu_f) / \sigma_f, \qquad f < A,

    with ``mean`` = :math:`\mu` and ``std`` = :math:`\sigma` given (``TUDataModule`` passes the
    per-feature mean and population std over all nodes of the dataset); a zero ``std`` is replaced by 1
    (a constant attribute becomes 0). The one-hot node-label columns after them are kept. Standard
    feature scaling; GraphCL's attribute masking (You et al., NeurIPS 2020) assumes features on a
    common scale (its Gaussian mask fill is ``N(0.5, 0.5^2)``), which raw TU attributes such as
    Cuneiform's (ranges up to about ±28) are not. ``x`` is not modified in place.
    Shapes: ``x=[N, F]`` -> ``x=[N, F]`` with ``F >= A``.
    """

    def __init__(self, mean: Tensor, std: Tensor):
        mean, std = torch.as_tensor(mean, dtype=torch.float), torch.as_tensor(std, dtype=torch.float)
        if mean.dim() != 1 or mean.shape != std.shape or mean.numel() == 0:
            raise ValueError(f"mean and std must be non-empty vectors of one size, got {tuple(mean.shape)} "
                             f"and {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std < 0).any():
            raise ValueError("mean and std must be finite and std non-negative")
        self.mean = mean
        self.std = torch.where(std > 0, std, torch.ones_like(std))

    def forward(self, data: Data) -> Data:
        x = data.x
        a = self.mean.numel()
        if x is None or x.dim() != 2 or x.size(1) < a:
            raise ValueError(f"StandardizeNodeAttributes expects x of shape [N, >= {a}], got "
                             f"{None if x is None else tuple(x.shape)}")
        out = x.clone().float()
        out[:, :a] = (out[:, :a] - self.mean) / self.std
        data.x = out
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.mean.numel()})"


_CACHE_FILES = ("data.pt", "pre_transform.pt", "pre_filter.pt")


def _load_cache(processed_dir: str):
    """The processed cache of :class:`_CheckedTUDataset` read with ``torch.load(weights_only=True)`` (no code
    from the files runs): ``(data.pt's tuple, None)``, or ``(None, why)`` when a file is missing, does not
    load that way (a pickle with other globals: possibly planted code) or has the wrong structure."""
    out = None
    for name in _CACHE_FILES:
        path = os.path.join(processed_dir, name)
        if not os.path.isfile(path):
            return None, f"{name} is missing"
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure means: rebuild from the raw files
            return None, f"{name} does not load with torch.load(weights_only=True) ({type(err).__name__})"
        if name == "data.pt":
            if not (isinstance(obj, tuple) and len(obj) == 4 and isinstance(obj[0], dict)
                    and isinstance(obj[1], dict) and isinstance(obj[2], dict)
                    and isinstance(obj[3], type) and issubclass(obj[3], Data)):
                return None, f"{name} is not a graph cache written by this PyG version"
            out = obj
        elif obj != "None":  # graphneg processes without pre_transform / pre_filter
            return None, f"{name} names a pre-processing step graphneg did not use ({str(obj)[:80]!r})"
    return out, None


class _CheckedTUDataset(TUDataset):
    """``torch_geometric.datasets.TUDataset`` with a content-keyed processed cache
    (``processed/<fingerprint>``, :func:`tu_fingerprint`), raw files checked by
    :func:`check_tu_files` before processing, no download, and a cache that cannot run code.

    PyG reads ``pre_transform.pt`` / ``pre_filter.pt`` with ``torch.load(weights_only=False)`` and falls back
    to it for ``data.pt`` too, so a pickle payload planted in a shipped ``processed/`` folder (its fingerprint
    is a hash of the raw files: anyone can compute it) would run. Here every cache file is read with
    ``weights_only=True`` only; a cache that does not load that way, or has another structure, is reported
    with a warning and rebuilt from the raw files (the bad files are overwritten, never unpickled).
    """

    def __init__(self, root: str, name: str, use_node_attr: bool = False):
        self.fingerprint = tu_fingerprint(name, root)
        self.name, self.cleaned = name, False
        self._cache = None
        # TUDataset.__init__ minus its data.pt load (PyG's loader may fall back to weights_only=False):
        # InMemoryDataset's __init__ runs our _process, which leaves the validated cache in self._cache
        InMemoryDataset.__init__(self, root)
        data, self.slices, self.sizes, data_cls = self._cache
        self.data = data_cls.from_dict(data)
        self._cache = None
        # as TUDataset.__init__ (use_edge_attr=False)
        if self._data.x is not None and not use_node_attr:
            self._data.x = self._data.x[:, self.num_node_attributes:]
        if self._data.edge_attr is not None:
            self._data.edge_attr = self._data.edge_attr[:, self.num_edge_attributes:]

    @property
    def processed_dir(self) -> str:
        return os.path.join(self.root, self.name, "processed", self.fingerprint)

    def download(self) -> None:
        raise FileNotFoundError(_layout_message(self.name, self.root))

    def _process(self) -> None:
        cache, why = _load_cache(self.processed_dir)
        if cache is None:
            if any(os.path.exists(os.path.join(self.processed_dir, f)) for f in _CACHE_FILES):
                warnings.warn(f"graphneg: the processed cache {self.processed_dir} is not used ({why}); rebuilding "
                              f"it from the raw files in {self.raw_dir}", stacklevel=2)
            os.makedirs(self.processed_dir, exist_ok=True)
            self.process()
            torch.save("None", os.path.join(self.processed_dir, "pre_transform.pt"))
            torch.save("None", os.path.join(self.processed_dir, "pre_filter.pt"))
            cache, why = _load_cache(self.processed_dir)
            if cache is None:
                raise RuntimeError(f"the TU cache just written to {self.processed_dir} does not load: {why}")
        self._cache = cache

    def process(self) -> None:
        check_tu_files(self.name, self.root)
        super().process()


def _worker_init(worker_id: int) -> None:
    """Reseed the augmentations of each DataLoader worker from the worker's seed."""
    info = get_worker_info()
    if info is not None:
        reseed_augmentations(getattr(info.dataset, "transform", None), info.seed % (2 ** 62))


class TUDataModule(L.LightningDataModule):
    r"""A TU graph-classification dataset read from ``<root>/<name>/raw`` for graph contrastive
    learning.

    * ``train_dataloader`` yields pairs ``(view1, view2)`` of :class:`~torch_geometric.data.Batch`,
      two augmented views of the same shuffled graphs (GraphCL, You et al. NeurIPS 2020, Sec. 3.2).
    * ``val_dataloader`` / ``test_dataloader`` / ``predict_dataloader`` yield the plain graphs of
      the **whole** dataset in file order (InfoGraph / HCL evaluate the embeddings of all graphs
      with the 10-fold SVC protocol, :func:`graphneg.metrics.graph_protocol.svc_protocol`).

    Node features: the node labels (one-hot) of the TU files, plus the continuous node attributes
    with ``use_node_attr=True``; datasets without either get one-hot node degrees
    (:class:`~torch_geometric.transforms.OneHotDegree` with the dataset's largest degree, as
    InfoGraph / HCL ``deepinfomax.py``; above ``max_degree_cap`` the degree is clamped,
    :class:`CappedOneHotDegree`).

    Nothing is downloaded: MUTAG and Cuneiform are copied from the grakel wheel when missing
    (:func:`prepare_grakel_tu`, which never overwrites a file already there); any other name
    without its raw files raises ``FileNotFoundError`` naming the expected layout. The raw files
    are checked before processing (:func:`check_tu_files`) and the processed cache is keyed on
    their content (:func:`tu_fingerprint`), so edited raw files are re-processed.

    Args:
        name: TU dataset name, as in the file names (``"MUTAG"``, ``"PROTEINS"``, ...).
        root: folder holding ``<name>/raw``.
        batch_size: graphs per training batch (HCL / GraphCL: 128).
        num_workers: DataLoader workers.
        augment: augmentation of the first view, a name of :data:`AUGMENTATIONS` or a callable.
        augment2: augmentation of the second view (``None``: the same kind as ``augment``, with
            its own random stream).
        aug_ratio: GraphCL's augmentation strength (see :func:`build_augmentation`).
        seed: seeds the augmentations and the training shuffle (reproducible batches).
        use_node_attr: add the continuous node attributes to ``x``.
        max_degree_cap: largest degree one-hot encoded for featureless datasets.
        eval_batch_size: batch size of the evaluation loaders (default ``batch_size``).
        drop_last: drop the last incomplete training batch.
        pin_memory: DataLoader ``pin_memory``.
        attr_mask_fill: mask value of attribute masking (``"zero"``, ``"mean"``, ``"gaussian"``).
        standardize_node_attr: z-score every continuous node attribute with its mean and population
            std over all nodes of the dataset (:class:`StandardizeNodeAttributes`; needs
            ``use_node_attr=True`` and a dataset with node attributes). Unsupervised (no label is
            read) and over all graphs, like the protocol's embeddings of all graphs. Default
            ``False`` (raw values, as PyG's ``TUDataset``).
    """

    def __init__(self, name: str, root: str = "datasets/tu", batch_size: int = 128,
                 num_workers: int = 0, augment: Union[str, Callable] = "random4",
                 augment2: Union[str, Callable, None] = None, aug_ratio: float = 0.2, seed: int = 0,
                 use_node_attr: bool = False, max_degree_cap: int = 1000,
                 eval_batch_size: Optional[int] = None, drop_last: bool = False,
                 pin_memory: bool = False, attr_mask_fill: str = "zero",
                 standardize_node_attr: bool = False):
        super().__init__()
        self.save_hyperparameters(logger=False)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a TU dataset name such as 'MUTAG', got {name!r}")
        for arg, value in (("batch_size", batch_size), ("max_degree_cap", max_degree_cap)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        if eval_batch_size is not None and (not isinstance(eval_batch_size, int) or eval_batch_size < 1):
            raise ValueError(f"eval_batch_size must be a positive integer, got {eval_batch_size!r}")
        self.name = _canonical_grakel_name(name) or name
        self.root = str(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.aug_ratio = aug_ratio
        self.seed = int(seed)
        self.use_node_attr = use_node_attr
        self.max_degree_cap = max_degree_cap
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.attr_mask_fill = attr_mask_fill
        if not isinstance(standardize_node_attr, bool):
            raise ValueError(f"standardize_node_attr must be True or False, got {standardize_node_attr!r}")
        if standardize_node_attr and not use_node_attr:
            raise ValueError("standardize_node_attr=True needs use_node_attr=True (the attributes are "
                             "only read then)")
        self.standardize_node_attr = standardize_node_attr
        # build once now so a bad name / ratio fails at construction
        self.augment1 = build_augmentation(augment, aug_ratio, attr_mask_fill)
        self.augment2 = build_augmentation(augment if augment2 is None else augment2, aug_ratio,
                                           attr_mask_fill)
        if self.augment2 is self.augment1 and not isinstance(self.augment1, Identity):
            self.augment2 = copy.deepcopy(self.augment1)
        self.views = TwoViews(self.augment1, self.augment2)
        reseed_augmentations(self.views, self.seed)
        self.feature_transform: Optional[BaseTransform] = None
        self._dataset = None
        self._train_dataset = None

    # -- data on disk ------------------------------------------------------------------------
    @property
    def raw_dir(self) -> Path:
        return Path(self.root) / self.name / "raw"

    def _ensure_raw(self) -> None:
        missing = [s for s in _REQUIRED if not (self.raw_dir / f"{self.name}_{s}.txt").is_file()]
        if not missing:
            return
        if self.name in GRAKEL_TU_DATASETS:
            prepare_grakel_tu(self.name, self.root)
            return
        raise FileNotFoundError(_layout_message(self.name, self.root))

    def prepare_data(self) -> None:
        self._ensure_raw()
        _CheckedTUDataset(self.root, self.name, self.use_node_attr)  # processes once per raw content

    def setup(self, stage: Optional[str] = None) -> None:
        self._load()

    def _load(self):
        if self._dataset is not None:
            return self._dataset
        self._ensure_raw()
        base = _CheckedTUDataset(self.root, self.name, self.use_node_attr)
        if len(base) == 0:
            raise ValueError(f"TU dataset {self.name!r} in {self.raw_dir} holds no graphs")
        if base[0].x is None:
            max_deg = 0
            for g in base:  # one pass at setup (not a hot path)
                if g.edge_index.numel():
                    max_deg = max(max_deg, int(degree(g.edge_index[0], g.num_nodes).max()))
            if max_deg <= self.max_degree_cap:
                self.feature_transform = OneHotDegree(max_deg)
            else:
                self.feature_transform = CappedOneHotDegree(self.max_degree_cap)
        if self.standardize_node_attr:
            a = int(base.num_node_attributes)
            if a == 0:
                raise ValueError(f"standardize_node_attr=True, but TU dataset {self.name!r} has no continuous "
                                 f"node attributes ({self.name}_node_attributes.txt is missing)")
            cols = base._data.x[:, :a].double()  # every node of every graph, in file order
            self.feature_transform = StandardizeNodeAttributes(cols.mean(0), cols.std(0, unbiased=False))
        base.transform = self.feature_transform
        train = copy.copy(base)
        train.transform = (self.views if self.feature_transform is None
                           else Compose([self.feature_transform, self.views]))
        self._dataset, self._train_dataset = base, train
        return base

    # -- dataset facts -----------------------------------------------------------------------
    @property
    def dataset(self):
        """The plain dataset (node features set, no augmentation)."""
        return self._load()

    @property
    def train_dataset(self):
        """The dataset whose items are ``(view1, view2)`` pairs."""
        self._load()
        return self._train_dataset

    @property
    def num_features(self) -> int:
        return int(self.dataset[0].x.size(-1))

    @property
    def num_classes(self) -> int:
        return int(self.dataset.num_classes)

    @property
    def labels(self) -> Tensor:
        """Graph labels ``[num_graphs]`` in dataset order (the order of the evaluation loaders)."""
        return self.dataset.y.view(-1).clone()

    def __len__(self) -> int:
        return len(self.dataset)

    # -- loaders -----------------------------------------------------------------------------
    def train_dataloader(self) -> TorchDataLoader:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        return TorchDataLoader(
            self.train_dataset, batch_size=self.batch_size, shuffle=True,
            collate_fn=collate_views, num_workers=self.num_workers,
            worker_init_fn=_worker_init if self.num_workers > 0 else None,
            generator=generator, drop_last=self.drop_last, pin_memory=self.pin_memory,
            persistent_workers=False,
        )

    def _eval_loader(self) -> PyGDataLoader:
        return PyGDataLoader(self.dataset, batch_size=self.eval_batch_size, shuffle=False,
                             num_workers=self.num_workers, pin_memory=self.pin_memory)

    def val_dataloader(self) -> PyGDataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> PyGDataLoader:
        return self._eval_loader()

    def predict_dataloader(self) -> PyGDataLoader:
        return self._eval_loader()

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(name={self.name!r}, root={self.root!r}, "
                f"batch_size={self.batch_size}, views={self.views!r})")
