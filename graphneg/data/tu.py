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

Homes: the raw files' layout and checks are :mod:`graphneg.data.tu_files`, the checked dataset and its
processed cache :mod:`graphneg.data.tu_cache` (:class:`~graphneg.data.tu_cache.CheckedTUDataset`), the
augmentations by name :mod:`graphneg.data.graph_augment.by_name` (:func:`build_augmentation`,
:data:`AUGMENTATIONS`); their public names stay importable from here.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import get_worker_info

import lightning as L
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader as PyGDataLoader
from torch_geometric.transforms import BaseTransform, Compose, OneHotDegree
from torch_geometric.utils import degree

from graphneg.data.tu_files import (  # noqa: F401  (public here too)
    GRAKEL_TU_DATASETS,
    TU_REQUIRED,
    canonical_grakel_name,
    check_tu_files,
    prepare_grakel_tu,
    tu_fingerprint,
    tu_layout_message,
)
from graphneg.data.tu_cache import CheckedTUDataset
from graphneg.data.graph_augment import (  # noqa: F401  (importable from here too, as before the split)
    AUGMENTATIONS,
    AttributeMask,
    EdgePerturb,
    Identity,
    NodeDrop,
    RandomChoice,
    SubgraphSample,
    TwoViews,
    build_augmentation,
    collate_views,
    reseed_augmentations,
)

__all__ = ["GRAKEL_TU_DATASETS", "AUGMENTATIONS", "prepare_grakel_tu", "check_tu_files",
           "tu_fingerprint", "build_augmentation", "CappedOneHotDegree", "StandardizeNodeAttributes",
           "TUDataModule"]


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
        self.name = canonical_grakel_name(name) or name
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
        missing = [s for s in TU_REQUIRED if not (self.raw_dir / f"{self.name}_{s}.txt").is_file()]
        if not missing:
            return
        if self.name in GRAKEL_TU_DATASETS:
            prepare_grakel_tu(self.name, self.root)
            return
        raise FileNotFoundError(tu_layout_message(self.name, self.root))

    def prepare_data(self) -> None:
        self._ensure_raw()
        CheckedTUDataset(self.root, self.name, self.use_node_attr)  # processes once per raw content

    def setup(self, stage: Optional[str] = None) -> None:
        self._load()

    def _load(self):
        if self._dataset is not None:
            return self._dataset
        self._ensure_raw()
        base = CheckedTUDataset(self.root, self.name, self.use_node_attr)
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
