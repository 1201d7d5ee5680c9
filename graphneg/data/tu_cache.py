"""The processed cache of the TU datasets: :class:`CheckedTUDataset`, PyG's
:class:`~torch_geometric.datasets.TUDataset` with the raw files checked before processing
(:func:`~graphneg.data.tu_files.check_tu_files`), the processed cache in
``<root>/<NAME>/processed/<fingerprint>/`` keyed on the raw files' content
(:func:`~graphneg.data.tu_files.tu_fingerprint`, so an edited raw file is processed again instead of a stale
cache being read), nothing downloaded, and every cache file read with ``torch.load(weights_only=True)``
(a cache cannot run code). :class:`graphneg.data.tu.TUDataModule` reads its graphs through it.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.datasets import TUDataset

from graphneg.data.tu_files import check_tu_files, tu_fingerprint, tu_layout_message

__all__ = ["CheckedTUDataset"]

_CACHE_FILES = ("data.pt", "pre_transform.pt", "pre_filter.pt")


def _load_cache(processed_dir: str):
    """The processed cache of :class:`CheckedTUDataset` read with ``torch.load(weights_only=True)`` (no code
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


class CheckedTUDataset(TUDataset):
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
        raise FileNotFoundError(tu_layout_message(self.name, self.root))

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
